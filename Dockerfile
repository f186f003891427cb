# syntax=docker/dockerfile:1
# The image of docker-compose.yml: Airflow 3.3.2 (CeleryExecutor, Postgres, Redis), Packer 1.6.6,
# mmdebstrap, systemd-nspawn, slirp4netns, Ansible and this project, installed the way
# `scripts/setup.sh` installs them on a machine (the path `make demo` and CI take).
#
# Why Debian 12 + pip and not FROM apache/airflow:3.3.2-python3.11:
#   * one set of pins: constraints.txt (checked on Debian 12's Python 3.11.2 by
#     scripts/check-constraints.sh) decides every package; the official image brings its own
#     constraints and preinstalled providers, which pip would mix with ours;
#   * Packer: the project's templates are written for Debian's packer 1.6.6, a bookworm package;
#     this base is bookworm by name, not by whatever the official image is built on;
#   * the local-bake worker runs as root (namespaces, mounts); the official image installs Python
#     packages into the airflow user's ~/.local, which root's Python does not read. Here one venv
#     (/opt/golden-image/.venv) serves every user.
# What the official image adds and this one does without: its entrypoint (waiting for the
# database, `_AIRFLOW_DB_MIGRATE`): docker-compose.yml's health checks and airflow-init do that.
#
#   docker compose build            (or: docker build -t golden-image-airflow:3.3.2 .)
ARG DEBIAN_IMAGE=debian:bookworm-slim
FROM ${DEBIAN_IMAGE}

ENV DEBIAN_FRONTEND=noninteractive \
    LANG=C.UTF-8 \
    LC_ALL=C.UTF-8 \
    PYTHONDONTWRITEBYTECODE=1 \
    AIRFLOW_HOME=/opt/airflow \
    GOLDEN_PROJECT_DIR=/opt/golden-image \
    GOLDEN_HOME=/var/lib/golden-image \
    PATH=/opt/golden-image/.venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

# Debian packages: Python 3.11 (bookworm's 3.11.2) and venv, curl for the health checks, and
# exactly what scripts/setup.sh installs (tests/unit/test_compose.py checks the two lists agree):
# packer 1.6.6, mmdebstrap, zstd, openssh-client, util-linux (unshare, setpriv), git, tar,
# systemd-container (systemd-nspawn), slirp4netns, gpgv, debian-archive-keyring.
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      python3 python3-venv ca-certificates curl procps \
      packer mmdebstrap zstd openssh-client util-linux git tar systemd-container slirp4netns \
      gpgv debian-archive-keyring \
 && rm -rf /var/lib/apt/lists/* \
 && packer version | grep -q '^Packer v1\.6\.' \
 # the airflow user as in Airflow's official image (uid 50000, group 0): the stack runs as it
 && useradd --uid 50000 --gid 0 --home-dir /home/airflow --create-home --shell /bin/bash airflow \
 && install -d -o 50000 -g 0 -m 0775 /opt/airflow /opt/airflow/logs /var/lib/golden-image \
 # docker-compose.yml mounts the checkout's .git read-only for the images' golden:git-sha tag;
 # it belongs to the host's user, so git must be told it is safe to read
 && git config --system --add safe.directory /opt/golden-image

WORKDIR /opt/golden-image

# The pinned Python packages first, in a layer of their own (rebuilt only when the pins change).
# The ansible package of requirements.txt brings the collections (ansible.windows,
# community.general, ...): nothing is fetched from Galaxy at build time.
COPY requirements.txt requirements-team.txt constraints.txt ./
RUN python3 -m venv .venv \
 && .venv/bin/pip install --no-cache-dir --disable-pip-version-check \
      -r requirements-team.txt -c constraints.txt

# The project. include/ is in the image too (a complete image), and docker-compose.yml mounts the
# checkout's include/ over it read-only.
COPY pyproject.toml ./
COPY scripts/ scripts/
COPY plugins/ plugins/
COPY dags/ dags/
COPY include/ include/
# setup.sh team: checks the Debian packages above, creates the unprivileged golden-runner user
# (Packer and ansible-playbook run as it when the worker is root), installs the project into the
# venv (editable, as on a machine: paths.project_dir() is /opt/golden-image) and says what it has
RUN scripts/setup.sh team \
 && rm -f .venv/setup-pip.log \
 && rm -rf /root/.cache \
 && python3 -m compileall -q plugins dags

USER 50000:0
EXPOSE 8080 8793 8974
ENTRYPOINT ["airflow"]
CMD ["version"]
