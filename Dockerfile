# syntax=docker/dockerfile:1
# Build: a static binary, the same flags as `make build`.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
ARG COMMIT=unknown
RUN CGO_ENABLED=0 go build -trimpath \
      -ldflags "-s -w -X main.version=${VERSION} -X main.commit=${COMMIT}" \
      -o /out/extauth ./cmd/extauth

# Run: distroless static, non-root, no shell.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/extauth /extauth
USER 65532:65532
EXPOSE 4180 9090
ENTRYPOINT ["/extauth"]
CMD ["serve"]
