# syntax=docker/dockerfile:1
#
# SwallowKeeper daemon image.
#
#   docker build -t swallowkeeper --build-arg VERSION=$(git describe --tags --always) .
#
#   docker run -d --name swallowkeeper \
#       -v /etc/swallowkeeper:/etc/swallowkeeper:ro \
#       -v swallowkeeper-state:/var/lib/swallowkeeper \
#       -p 127.0.0.1:9145:9145 \
#       swallowkeeper
#
# - The configuration is not in the image: mount it at
#   /etc/swallowkeeper/swallowkeeper.yml. Inside a container set
#   `metrics.listen: 0.0.0.0:9145` (the default, 127.0.0.1:9145, is not
#   reachable through -p), and point `targets[].url` at the nginx dyups/Lua
#   API as the container sees it, not at 127.0.0.1.
# - What 0.0.0.0:9145 exposes: the listener has no authentication and no
#   TLS. Whoever reaches the port reads /metrics, /healthz, /readyz (with
#   nginx's test output in reload mode), the status page and /status: every
#   upstream with its servers and registry instance ids, registry errors,
#   guard reasons; with `metrics.pprof: true` (off by default) also heap and
#   CPU profiles. Nothing there changes state. The Host check (page, /status
#   and pprof answer only an IP address, localhost or a name in
#   `metrics.allowed_hosts`) stops a web page from using a browser against
#   the port through DNS rebinding; it does not stop a client that reaches
#   the port itself. Hence `-p 127.0.0.1:9145:9145` above, never
#   `-p 9145:9145` on a host with a public address; in Kubernetes, no
#   Service or Ingress for the port beyond the scraper's network (probes
#   reach the pod IP directly).
# - /var/lib/swallowkeeper holds the persisted upstream file (`file`). nginx
#   must `include` (dyups) or load (Lua: persisted_file) that same file:
#   mount the volume into the nginx container too, read-only. The file is
#   0644 in a 0755 directory, so nginx reads it whatever its uid.
# - `docker stop` sends SIGTERM: a push in flight gets 5 s, within Docker's
#   default 10 s. `docker kill -s HUP swallowkeeper` re-reads the
#   configuration.
# - /healthz (the process answers) and /readyz (persisted state loaded and at
#   least one nginx target in sync) on port 9145 are for the orchestrator's
#   probes; `docker exec swallowkeeper swallowkeeper status -addr 127.0.0.1:9145`
#   shows what it applied. Docker's own HEALTHCHECK (below) runs that
#   `status` command: `docker ps` shows the container healthy while the
#   daemon answers.
# - Reload mode (reload.enabled) runs `nginx -t` and `nginx -s reload`; it
#   needs nginx in the same container, as root: this image is for the dyups
#   and Lua modes.
# - The Lua module (nginx/lua) is copied to /usr/share/swallowkeeper/lua,
#   the path nginx/conf/lua.conf uses: an nginx image can take it with
#   `COPY --from=swallowkeeper /usr/share/swallowkeeper/lua /usr/share/swallowkeeper/lua`.
#   An app image can take the binary the same way and run
#   `swallowkeeper register ... -- CMD` as its entrypoint.

# Base images are pinned by the digest of their multi-platform image index
# (the tag stays for the reader; a digest that does not match the tag's
# content fails the pull). Where each digest was read: docker-library's
# repo-info, which records what Docker Hub serves for each official tag
# (github.com/docker-library/repo-info):
#   golang:1.26-bookworm  repos/golang/remote/1.26-bookworm.md at commit
#     c4de0540f38eadbec61589627dfc2a89988445b9: OCI image index, linux
#     amd64, arm/v7, arm64/v8, 386, ppc64le; Go 1.26.7.
#   debian:bookworm-slim  repos/debian/remote/bookworm-slim.md at commit
#     05f354f0a08a211fdfed2f21845d1fccd389921d: OCI image index, linux
#     amd64, arm/v7, arm64/v8, 386, ppc64le; Debian snapshot of 2026-08-03.
# To move to newer base images: take the index digest ("docker pull
# golang@sha256:...", first line) of the tag from that repository, or
# `docker buildx imagetools inspect golang:1.26-bookworm`.
# packaging/dockerfile_test.go checks that every FROM is pinned.
FROM golang:1.26-bookworm@sha256:38f30937ff0751bd8c202e53556168b9093302ee6d591e7e65a9d1b84a9d360c AS build
WORKDIR /src
# Modules first: this layer stays cached while only the code changes.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath \
        -ldflags "-s -w -X github.com/swallowkeeper/swallowkeeper/internal/cli.Version=${VERSION}" \
        -o /out/swallowkeeper ./cmd/swallowkeeper \
    && /out/swallowkeeper version

FROM debian:bookworm-slim@sha256:abd67ffcfa541b485a3dff59865ab629aa048a6c613e639d36e7456b0b229241
# CA bundle for https to Consul/etcd, from the build stage (no apt here).
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
RUN groupadd --system --gid 10001 swallowkeeper \
    && useradd --system --uid 10001 --gid swallowkeeper --no-create-home \
               --home-dir /var/lib/swallowkeeper --shell /usr/sbin/nologin swallowkeeper \
    && install -d -o swallowkeeper -g swallowkeeper -m 0755 /var/lib/swallowkeeper \
    && install -d -m 0755 /etc/swallowkeeper
COPY --from=build /out/swallowkeeper /usr/local/bin/swallowkeeper
COPY examples/swallowkeeper.yml /usr/share/swallowkeeper/swallowkeeper.example.yml
COPY nginx/lua/ /usr/share/swallowkeeper/lua/

USER swallowkeeper:swallowkeeper
WORKDIR /var/lib/swallowkeeper
VOLUME /var/lib/swallowkeeper
EXPOSE 9145
STOPSIGNAL SIGTERM
# The binary is its own probe (the image has no curl): `status` asks the
# daemon's listener, at the metrics.listen of the same configuration file,
# for /status, and fails when nothing answers within 5 s. It needs
# metrics.listen on (not "off"). It reads the whole /status each time: with
# thousands of upstreams, a longer --interval costs less.
HEALTHCHECK --interval=30s --timeout=10s --start-period=10s --retries=3 \
    CMD ["swallowkeeper", "status", "-config", "/etc/swallowkeeper/swallowkeeper.yml"]
ENTRYPOINT ["swallowkeeper"]
CMD ["run", "-config", "/etc/swallowkeeper/swallowkeeper.yml"]
