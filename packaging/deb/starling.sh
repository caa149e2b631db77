#!/bin/sh
# The starling command (Debian package): the compiled CLI under /opt/starling.
exec /usr/bin/node /opt/starling/dist/agent/cli/starling.js "$@"
