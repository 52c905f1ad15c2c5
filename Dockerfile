# llamaboot as a container's entrypoint.
#
#   make                                   # builds the static bin/llamaboot
#   docker build --build-arg BASE_IMAGE=nvidia/cuda:12.8.1-runtime-ubuntu24.04 -t my-infer .
#
# BASE_IMAGE is your CUDA/Ubuntu image in real use. No step runs a shell, so
# the image also builds FROM scratch (--build-arg BASE_IMAGE=scratch), which
# the tests do.
ARG BASE_IMAGE=ubuntu:24.04
FROM ${BASE_IMAGE}

COPY bin/llamaboot /usr/local/bin/llamaboot
# WORKDIR creates the directory without a shell; reset afterwards.
WORKDIR /soft/app
WORKDIR /

ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    AUTO_INFER_APP_DIR=/soft/app
EXPOSE 8080
# Health asks llamaboot over its control socket (no curl, no port): healthy
# when every configured instance is ready. Failures in the start period do
# not count, so a big model has 10 minutes (the default ready_timeout) to load.
# Every 5 s, so `healthy` comes within seconds of ready: a check costs a few
# ms of CPU (llamaboot healthcheck starts fast). Engines from Docker 25 can
# instead keep a long --interval and add --start-interval=1s (older builders
# refuse that flag, so it is not set here).
HEALTHCHECK --interval=5s --timeout=10s --start-period=10m --retries=3 \
    CMD ["/usr/local/bin/llamaboot", "healthcheck"]
# llamaboot runs as PID 1: it reaps, forwards signals, supervises the
# servers and stops everything within docker stop's 10 s.
ENTRYPOINT ["/usr/local/bin/llamaboot", "entry", "--"]
