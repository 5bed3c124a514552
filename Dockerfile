# vastkeep: one image for every process (worker-control, worker-ssh, beat, flower, api).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    VASTKEEP_HOME=/var/lib/vastkeep

# openssh-client: log collection may shell out for diagnostics; tini: PID 1 that reaps and forwards signals
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini openssh-client \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --create-home --home-dir /home/vastkeep --shell /usr/sbin/nologin vastkeep \
 && mkdir -p /var/lib/vastkeep /opt/vastkeep \
 && chown vastkeep:vastkeep /var/lib/vastkeep

WORKDIR /opt/vastkeep
COPY pyproject.toml README.md* ./
COPY vastkeep ./vastkeep
COPY worker ./worker
COPY tasks ./tasks
COPY beat_schedule.py ./
COPY ops ./ops
RUN pip install . && chmod +x ops/*.sh

USER vastkeep
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["/opt/vastkeep/ops/start-worker-control.sh"]
