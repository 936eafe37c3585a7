package provider

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/extauth/extauth/pkg/metrics"
)

const (
	defaultGraphURL = "https://graph.microsoft.com"
	// maxGraphBody bounds Graph's answer: 4,096 group IDs are about 160 KB.
	maxGraphBody = 1 << 20
	// maxGroups is the most groups a session keeps (its encoding's limit).
	maxGroups = 4096
)

// MemberGroups reads the signed-in user's group IDs from Microsoft Graph
// (POST /v1.0/me/getMemberObjects, security groups, with the user's access
// token). Entra ID leaves the groups claim out of a token when the user
// has more than 200 groups (the "group overage") and names Graph in
// _claim_names instead. The token needs a Graph permission that reads the
// user's memberships (GroupMember.Read.All, or User.Read and consent; see
// docs/providers/entra.md). Each call is counted in
// extauth_groups_overage_total.
func (p *Provider) MemberGroups(ctx context.Context, accessToken string) ([]string, error) {
	groups, err := p.memberGroups(ctx, accessToken)
	result := metrics.OverageFetched
	if err != nil {
		result = metrics.OverageError
	}
	if p.metrics != nil {
		p.metrics.GroupsOverage.WithLabelValues(result).Inc()
	}
	return groups, err
}

func (p *Provider) memberGroups(ctx context.Context, accessToken string) ([]string, error) {
	if accessToken == "" {
		return nil, errors.New("microsoft graph: no access token")
	}
	base := strings.TrimSuffix(firstNonEmpty(p.cfg.MicrosoftGraphURL, defaultGraphURL), "/")
	ctx, cancel := context.WithTimeout(withEndpoint(ctx, metrics.EndpointGraph), p.cfg.RequestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1.0/me/getMemberObjects",
		bytes.NewReader([]byte(`{"securityEnabledOnly":true}`)))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+accessToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := p.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("microsoft graph: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxGraphBody+1))
	if err != nil {
		return nil, fmt.Errorf("microsoft graph: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		var ge struct {
			Error struct {
				Code string `json:"code"`
			} `json:"error"`
		}
		_ = json.Unmarshal(body, &ge)
		return nil, fmt.Errorf("microsoft graph getMemberObjects answered %s %s", resp.Status, bounded(ge.Error.Code))
	}
	if len(body) > maxGraphBody {
		return nil, fmt.Errorf("microsoft graph: answer larger than %d bytes", maxGraphBody)
	}
	var out struct {
		Value []string `json:"value"`
	}
	if err := json.Unmarshal(body, &out); err != nil {
		return nil, fmt.Errorf("microsoft graph: %w", err)
	}
	if len(out.Value) > maxGroups {
		return nil, fmt.Errorf("microsoft graph: %d groups, more than a session keeps (%d)", len(out.Value), maxGroups)
	}
	return out.Value, nil
}

// bounded keeps a provider's error code fit for a log line.
func bounded(s string) string {
	if len(s) > 64 {
		return s[:64]
	}
	return s
}
