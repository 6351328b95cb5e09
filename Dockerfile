# wsbridge container image.
#
#   docker build -t wsbridge .
#   docker run -p 6080:6080 -v $PWD/Examples/targets.yaml:/etc/wsbridge/targets.yaml wsbridge
#
# Arguments after the image name replace CMD, e.g. `docker run IMAGE 6080 vnc.internal:5900`.
# Not built in this project's CI (it has no Docker engine); the build stage uses the Swift release CI tests with (6.3).
# scripts/docker-proof replays it there: this build command, then the runtime stage in a debootstrap'd bookworm-slim.

# ---- build: a release binary with the Swift runtime and Foundation linked in statically ----
FROM swift:6.3-bookworm AS build
WORKDIR /src

# Resolve dependencies first, so that a source change does not fetch them again.
COPY Package.swift ./
RUN swift package resolve

COPY . .
RUN swift build -c release --static-swift-stdlib --product wsbridge \
    && scripts/build-rebind \
    && install -D -m 0755 .build/release/wsbridge /out/usr/local/bin/wsbridge \
    && install -D -m 0644 .build/release/libwsbridge-rebind.so /out/usr/local/lib/wsbridge/libwsbridge-rebind.so \
    && ln -s wsbridge /out/usr/local/bin/websockify \
    && install -D -m 0755 /usr/libexec/swift/linux/swift-backtrace-static /out/usr/local/libexec/swift-backtrace-static \
    && install -d /symbols \
    && objcopy --only-keep-debug /out/usr/local/bin/wsbridge /symbols/wsbridge.debug \
    && strip --strip-all /out/usr/local/bin/wsbridge \
    && objcopy --add-gnu-debuglink=/symbols/wsbridge.debug /out/usr/local/bin/wsbridge

# ---- symbols: what stripping took out of the binary (DWARF and the symbol table), not in the image ----
# A crash in the image prints a backtrace of addresses (SWIFT_BACKTRACE below); with this file they become function
# names and source lines: `docker build --target symbols --output type=local,dest=symbols .`, then
# `addr2line -f -C -i -e symbols/wsbridge.debug 0xADDRESS` (or `llvm-symbolizer --obj=symbols/wsbridge.debug`) for
# each address the backtrace gives, minus the image's load address it prints.
FROM scratch AS symbols
COPY --from=build /symbols/ /

# ---- runtime: the binary on a slim Debian of the same release (same glibc) ----
FROM debian:bookworm-slim

# The static-stdlib binary still links libc, libm, libcrypt (--auth-file hashes), libz (permessage-deflate),
# libstdc++ and libgcc_s dynamically: all in the base image. ca-certificates: the system CAs for TLS to backends
# (tls: true, --ssl-target). tzdata: local time zones (TZ) in log timestamps; without it they are UTC.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates tzdata \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 wsbridge \
    && useradd --system --no-log-init --uid 10001 --gid 10001 \
        --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin wsbridge \
    && mkdir -p /etc/wsbridge

COPY --from=build /out/ /

# Readable stack traces if it ever crashes, without a debugger in the image.
ENV SWIFT_BACKTRACE=enable=yes,sanitize=yes,threads=all,images=all,interactive=no,swift-backtrace=/usr/local/libexec/swift-backtrace-static

# The wsbridge user, by number: Kubernetes' runAsNonRoot can only verify a numeric user.
USER 10001:10001
EXPOSE 6080

# SIGTERM (docker stop) closes live sessions with 1001 within --shutdown-timeout (10 s, docker's own grace
# period): use `docker stop -t 15` or a shorter --shutdown-timeout so the drain is never cut short.
# Healthy when /readyz on the metrics listener (127.0.0.1:9680 inside the container) answers 200: a real
# WebSocket upgrade through the main listener succeeded. No curl in the image: the binary probes itself.
HEALTHCHECK --interval=15s --timeout=5s --start-period=5s --retries=3 CMD ["wsbridge", "healthcheck"]
ENTRYPOINT ["wsbridge"]
CMD ["--targets", "/etc/wsbridge/targets.yaml", "6080"]
