#!/bin/sh
# Copy FerretDB v1.24.2 from the Go module cache into a git-ignored folder and correct one line, so that
# the SQLite backend's lookups and updates by _id use the unique _id index (go.mod's `replace` builds it).
#
# Why: the index is created on the expression  _ferretdb_sjson->"_id"  (internal/backends/sqlite/metadata/
# registry.go, indexesCreate), but queries, updates and deletes by _id compare  _ferretdb_sjson->'$._id'
# (metadata.IDColumn). Both mean the same JSON path, yet SQLite matches index expressions by their form, so it
# never uses the index: every find/update by _id scans the table (3 ms at 1,000 documents, 183 ms at 100,000).
# Written as ->'_id' the expression is the index's own and the lookup stays flat. The stored data does not
# change, so existing data folders need no migration.
#
# usage: sh tools/ferretdb/patch-module.sh DEST     (run from the repository root; `make setup` does)
set -eu
dest=${1:?usage: patch-module.sh DEST}
module=github.com/FerretDB/FerretDB
version=v1.24.2
file=internal/backends/sqlite/metadata/metadata.go
old="IDColumn = DefaultColumn + \"->'\$._id'\""
new="IDColumn = DefaultColumn + \"->'_id'\""

# Outside any module, so tools/ferretdb's own replace directive does not hide the original.
src=$(cd / && ${GO:-go} mod download -json "$module@$version" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
if [ -z "$src" ] || [ ! -f "$src/$file" ]; then
    echo "patch-module.sh: $module@$version is not in the Go module cache (go mod download failed)" >&2
    exit 1
fi
tmp="$dest.tmp"
rm -rf "$tmp"
mkdir -p "$(dirname "$dest")"
cp -R "$src" "$tmp"
chmod -R u+w "$tmp"
if [ "$(grep -c -F "$old" "$tmp/$file")" != 1 ]; then
    echo "patch-module.sh: the expected line is not in $file; has the module changed?" >&2
    exit 1
fi
sed -i "s/->'\\\$\\._id'\"/->'_id'\"/" "$tmp/$file"
grep -q -F "$new" "$tmp/$file" || { echo "patch-module.sh: the patch did not apply" >&2; exit 1; }
rm -rf "$dest"
mv "$tmp" "$dest"
echo "patched $module@$version into $dest ($file: IDColumn uses the _id index)"
