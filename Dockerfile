# mlflow-registry-watcher in a container: a sidecar next to MLflow, or a Kubernetes CronJob.
#   docker build -t mlflow-watcher .
#   docker run -v watcher-state:/var/lib/mlflow-watcher \
#     -e WATCHER_MLFLOW__TRACKING_URI=http://mlflow:5000 \
#     -e WATCHER_WEBHOOKS='[{"name": "deploy", "url": "https://ci.example/hook", "secret_env": "DEPLOY_SECRET"}]' \
#     -e DEPLOY_SECRET=... mlflow-watcher
# Every config key can come from WATCHER_SECTION__KEY variables: no config file is needed.

FROM python:3.11-slim AS build
WORKDIR /src
# The same layout as the systemd install: a venv in /opt/mlflow-watcher.
RUN python -m venv /opt/mlflow-watcher
# Dependencies first, at the versions constraints.txt pins (the ones CI tests): a change to the
# code reuses this layer instead of installing them again.
COPY pyproject.toml constraints.txt ./
# With the `postgres` extra (psycopg's binary wheel and its pool, about 10 MB): one image runs a
# single watcher on its SQLite volume or replicas on a PostgreSQL state (WATCHER_STATE__URL).
# With the `console` extra (Flask, waitress, Flask-WTF: pure Python, about 3 MB): the web
# console is one `[console] listen` (WATCHER_CONSOLE__LISTEN) and one secret away.
RUN python -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; x = p["optional-dependencies"]; print("\n".join(p["dependencies"] + x["postgres"] + x["console"]))' > requirements.txt \
 && /opt/mlflow-watcher/bin/pip install --no-cache-dir --disable-pip-version-check \
      -c constraints.txt -r requirements.txt
COPY README.md ./
COPY watcher ./watcher
# Then bytecode for everything, checked by hash rather than by the sources' timestamps: a start
# and every HEALTHCHECK load it as it is instead of compiling again (the runtime user could not
# write it anyway).
RUN /opt/mlflow-watcher/bin/pip install --no-cache-dir --disable-pip-version-check --no-deps . \
 && /opt/mlflow-watcher/bin/python -m compileall -q -j 0 --invalidation-mode unchecked-hash /opt/mlflow-watcher/lib

FROM python:3.11-slim
COPY --from=build /opt/mlflow-watcher /opt/mlflow-watcher
# A fixed non-root uid, so a volume's ownership (Kubernetes fsGroup) can be set for it.
RUN groupadd --system --gid 10001 watcher \
 && useradd --system --uid 10001 --gid watcher --no-create-home --shell /usr/sbin/nologin watcher \
 && install -d -o watcher -g watcher -m 0700 /var/lib/mlflow-watcher
ENV PATH=/opt/mlflow-watcher/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    WATCHER_STATE__PATH=/var/lib/mlflow-watcher/state.db \
    WATCHER_SERVER__LISTEN=0.0.0.0:9464 \
    WATCHER_LOG__FORMAT=json
USER 10001:10001
WORKDIR /var/lib/mlflow-watcher
# The snapshot, outbox and delivery log. Without a persistent volume every restart records a
# new baseline, and registry changes made while the watcher was down are never sent.
VOLUME ["/var/lib/mlflow-watcher"]
EXPOSE 9464
# Ready: a poll succeeded within 3 intervals and the state is writable.
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["mlflow-watcher", "healthcheck"]
ENTRYPOINT ["mlflow-watcher"]
CMD ["run"]
