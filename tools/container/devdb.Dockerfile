# The development database in a container: the project's FerretDB v1.24.2 build (.tools/bin/ferretdb, made by
# `make setup` from tools/ferretdb; SQLite backend) on the same base image as chatmood. It stands in for MongoDB
# where no registry serves `mongo:7`: `make container-check` runs it beside the bot, and docker-compose.devdb.yml
# swaps it into docker-compose.yml. The build context is a folder holding only the `ferretdb` binary
# (tools/container/check.sh makes one). Not for production.
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
RUN groupadd --gid 10002 ferretdb \
 && useradd --uid 10002 --gid 10002 --home-dir /data/db --no-create-home --shell /usr/sbin/nologin ferretdb \
 && mkdir -p /data/db && chown ferretdb:ferretdb /data/db
COPY ferretdb /usr/local/bin/ferretdb
USER ferretdb
VOLUME ["/data/db"]
EXPOSE 27017
# The health check only connects (no base tool speaks the wire protocol); FerretDB would warn on every such
# connection at its default log level.
HEALTHCHECK --interval=2s --timeout=3s --start-period=5s --retries=15 \
  CMD ["python", "-c", "import socket; socket.create_connection(('127.0.0.1', 27017), 2).close()"]
ENTRYPOINT ["/usr/local/bin/ferretdb", "--listen-addr=0.0.0.0:27017", "--data-dir=/data/db", "--log-level=error"]
