#!/bin/sh
# Builds tests/memberlist/go/mlnode against Debian's hashicorp/memberlist in GOPATH mode (no
# module download). Usage: build.sh OUT
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:?usage: build.sh OUT}
mkdir -p "$(dirname "$out")"
cd "$here/mlnode"
GO111MODULE=off GOPATH=/usr/share/gocode GOFLAGS= GOCACHE=${GOCACHE:-/tmp/gossip-gocache} go build -o "$out" .
