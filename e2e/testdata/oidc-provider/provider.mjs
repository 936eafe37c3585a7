// panva's oidc-provider (a certified OpenID provider) as a real provider for
// extauth's e2e tests (e2e/nodeoidc_test.go). Test-only: in-memory storage,
// the built-in development login and consent pages, generated keys.
//
// Settings come from environment variables (or --name=value arguments,
// which win):
//
//   OP_PORT           port to listen on, on 127.0.0.1 (required)
//   OP_ISSUER         issuer URL (default http://127.0.0.1:OP_PORT); may be
//                     a reverse proxy's URL in front of this port: the
//                     provider trusts X-Forwarded-* and builds its URLs from
//                     the request's Host, so a proxy must forward Host or
//                     X-Forwarded-Host
//   OP_CLIENT_ID      the one registered client (default extauth-e2e)
//   OP_CLIENT_SECRET  its secret (default e2e-secret)
//   OP_APP_URL        the protected app's URL through nginx (required), e.g.
//                     http://127.0.0.1:8080: redirect URI APP/oauth2/callback,
//                     post-logout redirect URI APP/, back-channel logout URI
//                     APP/oauth2/backchannel_logout
//   OP_ACCESS_TTL     access-token lifetime in seconds (default 5)
//
// It prints "listening <issuer>" once it accepts connections, and one
// "backchannel <status> sid=<sid>" line per back-channel logout it sent.
import Provider from 'oidc-provider';

const args = Object.fromEntries(process.argv.slice(2)
  .filter((a) => a.startsWith('--') && a.includes('='))
  .map((a) => [a.slice(2, a.indexOf('=')), a.slice(a.indexOf('=') + 1)]));
const setting = (name, def) => {
  const v = args[name] ?? process.env[`OP_${name.toUpperCase().replaceAll('-', '_')}`] ?? def;
  if (v === undefined) {
    console.error(`provider.mjs: set OP_${name.toUpperCase().replaceAll('-', '_')} or --${name}=`);
    process.exit(2);
  }
  return v;
};

const port = Number(setting('port'));
const issuer = setting('issuer', `http://127.0.0.1:${port}`);
const appURL = setting('app-url').replace(/\/$/, '');
const accessTTL = Number(setting('access-ttl', '5'));
const backchannelLogoutURI = `${appURL}/oauth2/backchannel_logout`;

// One test user whatever login is typed on the dev login page: the login
// becomes the sub, the other claims follow from it.
function account(sub) {
  return {
    accountId: sub,
    async claims(_use, _scope, _claims, _rejected) {
      return {
        sub,
        email: `${sub}@example.com`,
        email_verified: true,
        preferred_username: sub,
        name: `Test User ${sub}`,
        groups: ['e2e-users', 'node-oidc'],
      };
    },
  };
}

const configuration = {
  clients: [{
    client_id: setting('client-id', 'extauth-e2e'),
    client_secret: setting('client-secret', 'e2e-secret'),
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
    redirect_uris: [`${appURL}/oauth2/callback`],
    post_logout_redirect_uris: [`${appURL}/`],
    backchannel_logout_uri: backchannelLogoutURI,
    backchannel_logout_session_required: true,
  }],
  scopes: ['openid', 'offline_access', 'profile', 'email', 'groups'],
  claims: {
    openid: ['sub'],
    profile: ['name', 'preferred_username'],
    email: ['email', 'email_verified'],
    groups: ['groups'],
  },
  findAccount: async (_ctx, sub) => account(sub),
  features: {
    devInteractions: { enabled: true },
    revocation: { enabled: true },
    rpInitiatedLogout: { enabled: true },
    backchannelLogout: { enabled: true },
  },
  pkce: { required: () => true },
  // Every refresh grant returns a new refresh token and retires the one
  // presented; presenting a retired one again revokes the whole grant.
  rotateRefreshToken: true,
  issueRefreshToken: async (_ctx, client, code) => client.grantTypeAllowed('refresh_token')
    && code.scopes.has('offline_access'),
  ttl: {
    AccessToken: accessTTL,
    AuthorizationCode: 60,
    IdToken: 3600,
    RefreshToken: 24 * 3600,
    Interaction: 600,
    Session: 24 * 3600,
    Grant: 24 * 3600,
  },
  cookies: { keys: ['extauth-e2e-cookie-key-not-secret'] },
  // oidc-provider refuses to send requests to loopback and private
  // addresses (SSRF protection); the back-channel logout URI is nginx on
  // 127.0.0.1 here, so that one URL goes without the guard.
  fetch: (url, options) => {
    if (url === backchannelLogoutURI) {
      const { dispatcher: _guard, ...rest } = options;
      return globalThis.fetch(url, rest);
    }
    return globalThis.fetch(url, options);
  },
};

const provider = new Provider(issuer, configuration);
// Behind the test's reverse proxy: believe its X-Forwarded-Proto/Host.
provider.proxy = true;

provider.on('backchannel.success', (_ctx, _client, _accountId, sid) => {
  console.log(`backchannel ok sid=${sid}`);
});
provider.on('backchannel.error', (_ctx, err, _client, _accountId, sid) => {
  console.log(`backchannel error sid=${sid}: ${err.message}${err.cause ? ` (${err.cause.message})` : ''}`);
});
provider.on('server_error', (_ctx, err) => console.error('server_error', err));

const server = provider.listen(port, '127.0.0.1', () => {
  console.log(`listening ${issuer}`);
});
const stop = () => server.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
