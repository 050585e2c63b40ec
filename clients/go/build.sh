#!/usr/bin/env bash
# Generate the Go package from the contracts and build the smoke client, offline, from Debian's packages only:
#
#   apt-get install golang-go protobuf-compiler protoc-gen-go protoc-gen-go-grpc \
#     golang-google-protobuf-dev golang-github-golang-protobuf-1-5-dev golang-google-grpc-dev golang-google-genproto-dev
#
# Writes gen/go/clarion/v1/ (package clarionv1, import path github.com/clarion-notify/clarion/gen/go/clarion/v1, as
# the protos' go_package says) and .build/bin/smoke; both are build output, ignored by git. Safe to run again: it
# regenerates, and Go's build cache makes the second build fast.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build="$here/.build"
module=github.com/clarion-notify/clarion

missing=()
for tool in go protoc protoc-gen-go protoc-gen-go-grpc; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
for package in google.golang.org/grpc google.golang.org/protobuf google.golang.org/genproto github.com/golang/protobuf; do
  [[ -d /usr/share/gocode/src/$package ]] || missing+=("/usr/share/gocode/src/$package")
done
if ((${#missing[@]})); then
  echo "build.sh: missing ${missing[*]}; install the Debian packages listed at the top of $0" >&2
  exit 2
fi
# Debian's golang-goprotobuf-dev also ships a protoc-gen-go: the old APIv1 one, which writes code for
# github.com/golang/protobuf instead of google.golang.org/protobuf. Only the APIv2 plugin prints a version.
if ! protoc-gen-go --version </dev/null 2>/dev/null | grep -q '^protoc-gen-go v1\.'; then
  echo "build.sh: $(command -v protoc-gen-go) is not the APIv2 plugin; install Debian's protoc-gen-go" >&2
  exit 2
fi

mkdir -p "$build"
# Two runs at once (two test workers, two people in one checkout) would delete each other's generated files.
exec 9>"$build/lock"
flock 9

# GOPATH mode (GO111MODULE=off), not modules: there is no module proxy here, and Debian ships its Go libraries as a
# GOPATH tree (/usr/share/gocode/src), which is how Debian itself builds them. Module mode would need a `replace`
# for every module in the graph, and each replaced module's own requirements (grpc's go.mod names modules Debian
# does not ship) would still have to resolve. So this folder is the root of the import path
# github.com/clarion-notify/clarion through a symlink in a private GOPATH entry, ahead of Debian's tree.
gopath="$build/gopath"
mkdir -p "$gopath/src/github.com/clarion-notify"
ln -sfn "$here" "$gopath/src/$module"
export GO111MODULE=off GOFLAGS= GOPROXY=off
export GOPATH="$gopath:/usr/share/gocode"
# Inside .build, so a build needs no writable home directory and `rm -rf .build` forgets everything.
export GOCACHE="$build/cache"

# From the descriptor set `make gen` writes and CI proves fresh: the same contracts, with their comments, that
# Envoy and the Python stubs use, and the google/api, google/rpc and well-known protos they import. Generated
# next to the old output and swapped in, so a failed protoc leaves the last good package in place.
fresh="$build/gen.new"
rm -rf "$fresh"
mkdir -p "$fresh"
protos=()
while IFS= read -r proto; do protos+=("${proto#"$root/protos/"}"); done < <(find "$root/protos" -name '*.proto' | sort)
protoc \
  --descriptor_set_in="$root/gen/clarion.binpb" \
  --go_out="$fresh" --go_opt=module="$module" \
  --go-grpc_out="$fresh" --go-grpc_opt=module="$module" \
  "${protos[@]}"
rm -rf "$here/gen"
mv "$fresh/gen" "$here/gen"
rm -rf "$fresh"

unformatted=$(gofmt -l "$here/cmd")
if [[ -n $unformatted ]]; then
  echo "build.sh: not gofmt-formatted: $unformatted" >&2
  exit 1
fi
go vet "$module/gen/go/clarion/v1" "$module/cmd/smoke"
go build -o "$build/bin/smoke" "$module/cmd/smoke"
echo "build.sh: built $build/bin/smoke"
