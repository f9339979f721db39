# syntax=docker/dockerfile:1
#
# ctguard container image: one static binary on a distroless base.
#
#   docker build -t ctguard .
#   docker run --network host --cap-drop ALL --cap-add NET_ADMIN --read-only \
#     -v /etc/ctguard:/etc/ctguard:ro -v /var/lib/ctguard:/var/lib/ctguard \
#     ctguard run -f /etc/ctguard --state-dir /var/lib/ctguard
#
# Privileges: ctguard needs CAP_NET_ADMIN and nothing else, in the network
# namespace it protects (the host's: --network host / hostNetwork: true).
# CAP_NET_ADMIN covers every kernel interface it uses: nftables and
# ctnetlink requests (nfnetlink checks CAP_NET_ADMIN on each message), joining
# the conntrack event groups, and SO_RCVBUFFORCE for the event socket. The
# net.netfilter.* sysctls are per network namespace; their permission hook
# (net_ctl_permissions, net/sysctl_net.c) hands the owner's rw bits to any
# caller that has CAP_NET_ADMIN in the user namespace owning the netns, or
# is that namespace's root uid. So a non-root uid with CAP_NET_ADMIN can
# write nf_conntrack_tcp_be_liberal, and so can uid 0 with no capability at
# all. (Checked on Linux 6.18 in a fresh netns owned by the initial user
# namespace, as the host's is: uid 65534 with only CAP_NET_ADMIN writes it,
# uid 65534 without it gets EACCES.) Container runtimes, however, mount
# /proc/sys read-only in unprivileged containers, so in a container only
# the perFlow and dropInvalid workarounds work; the global sysctl needs a
# privileged container or the systemd unit in examples/deploy.
#
# Why the image runs as uid 0: a non-root process keeps a capability across
# execve only through the ambient set or file capabilities. Neither Docker
# nor Kubernetes (containerd, CRI-O) sets ambient capabilities, and file
# capabilities are ignored under no_new_privs (allowPrivilegeEscalation:
# false). uid 0 with every capability but NET_ADMIN dropped is the working
# least-privilege setup; run it with --cap-drop ALL --cap-add NET_ADMIN
# (examples/deploy/daemonset.yaml does the equivalent).
#
# State: the rollback journal lives in /var/lib/ctguard; mount a host
# directory there (the root filesystem can and should be read-only) so it
# survives the container.

# Keep the Go version in step with go.mod.
FROM --platform=$BUILDPLATFORM golang:1.26 AS build
ARG TARGETOS
ARG TARGETARCH
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
# What "ctguard --version" and ctguard_build_info report. .git is not in the
# build context (.dockerignore), so the toolchain cannot record the commit:
#   docker build --build-arg VERSION=$(git describe --tags --always --dirty) \
#     --build-arg COMMIT=$(git rev-parse HEAD) -t ctguard .
ARG VERSION=devel
ARG COMMIT=unknown
# Static, reproducible, stripped: no libc needed at run time.
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -ldflags="-s -w -X github.com/ctguard/ctguard/internal/version.version=${VERSION} -X github.com/ctguard/ctguard/internal/version.commit=${COMMIT}" -o /out/ctguard ./cmd/ctguard

# distroless/static: CA certificates, tzdata, /etc/passwd; no shell.
FROM gcr.io/distroless/static-debian12
COPY --from=build /out/ctguard /usr/local/bin/ctguard
# uid 0 on purpose (see above); drop all capabilities but NET_ADMIN at run time.
USER 0:0
VOLUME ["/var/lib/ctguard"]
# Metrics, /healthz and /readyz when run with --metrics-addr :9468.
EXPOSE 9468
ENTRYPOINT ["ctguard"]
CMD ["run"]
