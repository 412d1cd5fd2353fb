#!/usr/bin/env bash
# Build the patched mod_audio_stream (voxcom-us fork, MIT) into a .deb.
#
#   build-deb.sh [--source TARBALL_OR_DIR] --out DIR [--freeswitch-pkgconfig DIR] [--libwsc TARBALL_OR_DIR]
#
# --source   the pinned module source (SOURCE in this folder says which); a .tar.gz or an unpacked folder.
#            Default, when run from the repository next to ../shared: ../shared/freeswitch/src/$TARBALL.
# --out      where DIR/freeswitch-mod-audio-stream-aivg_<version>_amd64.deb is written.
# --freeswitch-pkgconfig  folder holding freeswitch.pc (added to PKG_CONFIG_PATH); the module is built
#            against its headers and installed into its `modulesdir`. Default: pkg-config's own search path
#            (SignalWire's libfreeswitch-dev puts it there).
# --libwsc   libwsc source when the module source has an empty libs/libwsc (GitHub's archive of the
#            module does not include the submodule); SOURCE names the commit.
#
# Applies patches/*.patch in order, builds with cmake, packs with dpkg-deb. Quiet on success (prints the
# .deb path), prints the build log and exits non-zero on any failure. Idempotent: when DIR already holds
# the .deb built from the same source, patches, script and FreeSWITCH headers, it is left as it is.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
die() { echo "build-deb.sh: $*" >&2; exit 1; }

# SOURCE is KEY=VALUE lines; read only the keys we know instead of sourcing it.
src_get() { sed -n "s/^$1=//p" "$here/SOURCE" | head -n1; }
version=$(src_get VERSION)
tarball_name=$(src_get TARBALL)
tarball_sha=$(src_get TARBALL_SHA256)
[[ -n "$version" && -n "$tarball_name" ]] || die "$here/SOURCE lacks VERSION or TARBALL"

source="" out="" pcdir="" libwsc=""
while (($#)); do
    case "$1" in
        --source) source=${2:?--source needs a value}; shift 2 ;;
        --out) out=${2:?--out needs a value}; shift 2 ;;
        --freeswitch-pkgconfig) pcdir=${2:?--freeswitch-pkgconfig needs a value}; shift 2 ;;
        --libwsc) libwsc=${2:?--libwsc needs a value}; shift 2 ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
done
[[ -n "$out" ]] || die "--out DIR is required"
if [[ -z "$source" ]]; then
    source=$(cd "$here/../.." && pwd)/../shared/freeswitch/src/$tarball_name
    [[ -e "$source" ]] || die "no --source given and no default source at $source"
fi
[[ -e "$source" ]] || die "source not found: $source"
for tool in cmake make g++ pkg-config dpkg-deb patch sha256sum; do
    command -v "$tool" >/dev/null || die "missing build tool: $tool (see requirements/apt.txt)"
done

if [[ -n "$pcdir" ]]; then
    [[ -f "$pcdir/freeswitch.pc" ]] || die "no freeswitch.pc in $pcdir"
    export PKG_CONFIG_PATH="$pcdir${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
fi
pkg-config --exists freeswitch || die "pkg-config finds no freeswitch.pc (install libfreeswitch-dev or pass --freeswitch-pkgconfig)"
modulesdir=$(pkg-config --variable=modulesdir freeswitch)
[[ "$modulesdir" == /* ]] || die "freeswitch.pc has no absolute modulesdir"
fs_version=$(pkg-config --modversion freeswitch)

# A tarball with the pinned name must be the pinned bytes (the role downloads it; a truncated or
# substituted download must not be built).
if [[ -f "$source" && "$(basename "$source")" == "$tarball_name" && -n "$tarball_sha" ]]; then
    got=$(sha256sum "$source" | cut -d' ' -f1)
    [[ "$got" == "$tarball_sha" ]] || die "$source has sha256 $got, SOURCE pins $tarball_sha"
fi

hash_input() {  # a file's or a folder's content, for the build key
    if [[ -d "$1" ]]; then
        (cd "$1" && find . -type f ! -path './.git/*' ! -path './build/*' -print0 | LC_ALL=C sort -z \
            | xargs -0 sha256sum) | sha256sum
    else
        sha256sum < "$1"
    fi
}
key=$( { hash_input "$source"; [[ -n "$libwsc" ]] && hash_input "$libwsc"
         cat "$here"/patches/*.patch "$here/SOURCE" "$here/build-deb.sh"
         echo "$modulesdir $fs_version"; cat "$(pkg-config --variable=includedir freeswitch)"/*.h
       } | sha256sum | cut -c1-16)

pkg=freeswitch-mod-audio-stream-aivg
arch=$(dpkg --print-architecture)
deb="$pkg"_"$version"_"$arch".deb
mkdir -p "$out"
out=$(cd "$out" && pwd)
stamp="$out/.$pkg.buildkey"
if [[ -f "$out/$deb" && "$(cat "$stamp" 2>/dev/null)" == "$key" ]]; then
    echo "$out/$deb"
    exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
log="$work/build.log"
fail() { cat "$log" >&2 2>/dev/null || true; die "$*"; }

unpack() {  # unpack a tarball or copy a folder into $2 (its single top folder becomes $2)
    mkdir -p "$2"
    if [[ -d "$1" ]]; then
        cp -a "$1/." "$2/"
    else
        tar -xzf "$1" -C "$2" --strip-components=1 || die "cannot unpack $1"
    fi
}
unpack "$source" "$work/src"
[[ -f "$work/src/audio_streamer_glue.cpp" ]] || die "$source does not look like mod_audio_stream"
if [[ -n "$libwsc" ]]; then
    rm -rf "$work/src/libs/libwsc"
    unpack "$libwsc" "$work/src/libs/libwsc"
fi
[[ -f "$work/src/libs/libwsc/CMakeLists.txt" ]] || die "libs/libwsc is empty: pass --libwsc (SOURCE names the commit)"

for p in "$here"/patches/*.patch; do
    patch -d "$work/src" -p1 --forward --batch --quiet < "$p" >>"$log" 2>&1 || fail "patch $(basename "$p") does not apply"
done

# USE_TLS: wss:// to a gateway on another host. Release: the module's CMake strips the .so. The prefix map
# keeps the temporary build folder out of the binary (log lines carry __FILE__), so the same inputs give
# the same .so.
prefix_map="-ffile-prefix-map=$work=/build"
cmake -S "$work/src" -B "$work/build" -DCMAKE_BUILD_TYPE=Release -DUSE_TLS=ON \
    -DCMAKE_C_FLAGS="$prefix_map" -DCMAKE_CXX_FLAGS="$prefix_map" >>"$log" 2>&1 || fail "cmake failed"
cmake --build "$work/build" --target mod_audio_stream -j"$(nproc)" >>"$log" 2>&1 || fail "build failed"
so="$work/build/mod_audio_stream.so"
[[ -f "$so" ]] || fail "the build made no mod_audio_stream.so"

root="$work/root"
install -D -m 0644 "$so" "$root$modulesdir/mod_audio_stream.so"
doc="$root/usr/share/doc/$pkg"
mkdir -p "$doc"
{
    echo "mod_audio_stream $(src_get MODULE_REPO) $(src_get MODULE_COMMIT) (MIT):"
    cat "$work/src/LICENSE"
    echo
    echo "libwsc $(src_get LIBWSC_REPO) $(src_get LIBWSC_COMMIT) (MIT), linked in statically:"
    cat "$work/src/libs/libwsc/LICENSE"
} > "$doc/copyright"
cp "$here"/patches/*.patch "$doc/"
gzip -9n "$doc"/*.patch

# Runtime libraries: the ones the .so links, each mapped to its Debian package. libfreeswitch only
# when it comes from a package (SignalWire's libfreeswitch1); a FreeSWITCH built from source has none.
depends=()
while read -r lib path; do
    [[ -n "$path" ]] || continue
    owner=$(dpkg-query -S "$(readlink -f "$path")" 2>/dev/null | cut -d: -f1 | head -n1) || true
    [[ -z "$owner" ]] && owner=$(dpkg-query -S "$path" 2>/dev/null | cut -d: -f1 | head -n1) || true
    [[ -n "$owner" ]] && depends+=("$owner")
done < <(objdump -p "$so" | awk '/NEEDED/ {print $2}' | while read -r lib; do
            echo "$lib $(ldd "$so" | awk -v l="$lib" '$1 == l {print $3}')"; done)
depends_line=$(printf '%s\n' "${depends[@]}" | LC_ALL=C sort -u | paste -sd, - | sed 's/,/, /g')

mkdir -p "$root/DEBIAN"
cat > "$root/DEBIAN/control" <<EOF
Package: $pkg
Version: $version
Architecture: $arch
Maintainer: AI voice SIP gateway appliance <aivg@localhost>
Section: comm
Priority: optional
Depends: $depends_line
Provides: freeswitch-mod-audio-stream
Conflicts: freeswitch-mod-audio-stream, mod-audio-stream
Replaces: freeswitch-mod-audio-stream, mod-audio-stream
Installed-Size: $(du -sk "$root" | cut -f1)
Homepage: $(src_get MODULE_REPO)
Description: FreeSWITCH mod_audio_stream (voxcom-us fork) with the aivg hang-up fix
 Streams call audio to a WebSocket server and plays its streamAudio replies in
 real time. Built from voxcom-us/mod_audio_stream $(src_get MODULE_COMMIT | cut -c1-7) with libwsc
 $(src_get LIBWSC_COMMIT | cut -c1-7), plus the patches in /usr/share/doc/$pkg/: a channel no longer
 stays up for good when it hangs up or the stream stops while reply audio is queued.
 Built against FreeSWITCH $fs_version; installs into $modulesdir.
EOF
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$here" log -1 --format=%ct 2>/dev/null || echo 0)}
dpkg-deb --root-owner-group -Zxz --build "$root" "$work/$deb" >>"$log" 2>&1 || fail "dpkg-deb failed"
mv -f "$work/$deb" "$out/$deb"
echo "$key" > "$stamp"
echo "$out/$deb"
