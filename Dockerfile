# syntax=docker/dockerfile:1
#
# One image for every process of the Procfile; docker-compose.yml picks the process
# with `command:` (dispatcher worker | scheduler | bridge | web). The default is `web`.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# An unprivileged user with a fixed uid, so volume permissions are predictable.
RUN groupadd --system --gid 10001 dispatcher \
    && useradd --system --uid 10001 --gid dispatcher --create-home \
       --home-dir /home/dispatcher --shell /usr/sbin/nologin dispatcher

WORKDIR /src

# Dependencies first, read from pyproject.toml alone: this layer is rebuilt only when
# the dependency list changes, not on every edit of the code.
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; print('\n'.join(deps))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# Then the project itself (runtime dependencies only: no dev extras). The source
# tree is removed afterwards; the installed package lives in site-packages.
COPY dispatcher ./dispatcher
COPY workers ./workers
RUN pip install . \
    && cd / && rm -rf /src

# `dispatcher run` keeps an embedded Redis in ./.dispatcher, so the working
# directory belongs to the unprivileged user.
WORKDIR /app
RUN chown dispatcher:dispatcher /app
USER dispatcher

EXPOSE 8000
CMD ["dispatcher", "web"]
