#!/bin/sh
# Installs (or removes) adaptd as a systemd service, without a package manager.
# Run `systemd/install.sh --help` for the options; docs/install.md for the whole story.
set -eu

me=install.sh
here=$(cd "$(dirname "$0")" && pwd)

usage() {
    cat <<EOF
usage: $me [OPTIONS]
       $me --uninstall [--purge] [OPTIONS]

Installs adaptd as a systemd service:
  PREFIX/bin/adaptd                      the binary (--binary)
  /etc/systemd/system/adaptd.service     the unit (from $here/adaptd.service)
  /etc/adaptd/adaptd.toml                the default configuration, only if there is none;
                                         a different existing file is kept and the new default
                                         is written next to it as adaptd.toml.new
  PREFIX/share/adaptd/models/            the *.onnx, *.txt and *.toml files of --models
then runs \`systemctl daemon-reload\` and \`systemctl enable --now adaptd\` (or restarts it
when it is already running). Running it again is fine.

Options:
  --binary PATH    the adaptd binary to install (default: ./target/release/adaptd)
  --models DIR     where the model files are (default: ./models; fill it with
                   \`models/fetch --dest DIR\`). Files named in a manifest (*.toml) are
                   checked against its sha256 before anything is installed.
  --prefix DIR     installation prefix (default: /usr). The unit's ExecStart= and
                   ADAPTD_MODEL_DIR follow it. Give the same --prefix to --uninstall.
  --destdir DIR    install into DIR as a scratch root (same as the DESTDIR variable):
                   no root needed, systemctl is never run (what would be run is printed)
  --no-start       install and daemon-reload only; do not enable or start the service
  --uninstall      stop and disable the service, remove the binary, the unit and the models;
                   KEEP /etc/adaptd (configuration) and /var/lib/adaptd (samples, heads)
  --purge          --uninstall, and also remove /etc/adaptd, /var/lib/adaptd and the unit's
                   drop-ins (/etc/systemd/system/adaptd.service.d)
  -h, --help       this text

Exit status: 0 done, 1 failure, 2 usage error.
EOF
}

say() { echo "$me: $*"; }
die() { echo "$me: error: $*" >&2; exit 1; }
usage_error() { echo "$me: $*" >&2; echo "$me: see '$me --help'" >&2; exit 2; }

# --- Arguments ---------------------------------------------------------------------------------
binary=./target/release/adaptd
models=./models
models_given=no
prefix=/usr
destdir=${DESTDIR:-}
start=yes
action=install
purge=no

need_value() {
    [ "$2" -ge 2 ] || usage_error "$1 needs a value"
}
while [ $# -gt 0 ]; do
    case $1 in
        --binary) need_value "$1" $#; binary=$2; shift 2 ;;
        --binary=*) binary=${1#*=}; shift ;;
        --models) need_value "$1" $#; models=$2; models_given=yes; shift 2 ;;
        --models=*) models=${1#*=}; models_given=yes; shift ;;
        --prefix) need_value "$1" $#; prefix=$2; shift 2 ;;
        --prefix=*) prefix=${1#*=}; shift ;;
        --destdir) need_value "$1" $#; destdir=$2; shift 2 ;;
        --destdir=*) destdir=${1#*=}; shift ;;
        --no-start) start=no; shift ;;
        --uninstall) action=uninstall; shift ;;
        --purge) action=uninstall; purge=yes; shift ;;
        -h|--help) usage; exit 0 ;;
        --) shift; [ $# -eq 0 ] || usage_error "unexpected argument '$1'" ;;
        -*) usage_error "unknown option '$1'" ;;
        *) usage_error "unexpected argument '$1' (options only)" ;;
    esac
done

case $prefix in
    /*) ;;
    *) usage_error "--prefix must be an absolute path, not '$prefix'" ;;
esac
case $prefix in
    *[!A-Za-z0-9/._+-]*) usage_error "--prefix '$prefix': only letters, digits and / . _ + - are supported" ;;
esac
# No trailing slash (but keep "/").
while [ "${prefix%/}" != "$prefix" ] && [ "$prefix" != / ]; do prefix=${prefix%/}; done
[ "$prefix" = / ] && prefix=

if [ -n "$destdir" ]; then
    mkdir -p "$destdir" || die "cannot create DESTDIR '$destdir'"
    destdir=$(cd "$destdir" && pwd)
    [ "$destdir" != / ] || destdir=
fi
if [ -n "$destdir" ]; then scratch=yes; else scratch=no; fi

if [ "$scratch" = no ] && [ "$(id -u)" -ne 0 ]; then
    die "installing the service needs root: run it with sudo (or set DESTDIR / --destdir DIR to install into a scratch root)"
fi

# The .deb owns the same paths: never mix the two.
if [ "$scratch" = no ] && command -v dpkg-query >/dev/null 2>&1 &&
    dpkg-query -W -f='${Status}' adaptd 2>/dev/null | grep -q 'install ok installed'; then
    die "the adaptd Debian package is installed: upgrade or remove it with apt (apt remove adaptd, apt purge adaptd) instead of this script"
fi

# Final locations (what the running system sees) and where they are written (under DESTDIR).
bin_path=$prefix/bin/adaptd
models_path=$prefix/share/adaptd/models
unit_path=/etc/systemd/system/adaptd.service
dropin_path=/etc/systemd/system/adaptd.service.d
config_dir=/etc/adaptd
config_path=$config_dir/adaptd.toml
state_link=/var/lib/adaptd
state_private=/var/lib/private/adaptd
D=$destdir

# --- systemctl, or what would be run -------------------------------------------------------------
systemd_running() {
    # sd_booted(): systemd is PID 1.
    [ -d /run/systemd/system ]
}
warned_no_systemd=no
run_systemctl() {
    if [ "$scratch" = yes ]; then
        say "DESTDIR set, would run: systemctl $*"
        return 0
    fi
    if ! systemd_running; then
        if [ "$warned_no_systemd" = no ]; then
            say "warning: systemd is not running on this machine (PID 1 is not systemd): skipping systemctl"
            warned_no_systemd=yes
        fi
        say "skipped: systemctl $*"
        return 0
    fi
    say "running: systemctl $*"
    systemctl "$@"
}

# Copies $1 to $2 with mode $3, atomically (a running binary can be replaced).
put_file() {
    mkdir -p "$(dirname "$2")"
    if [ -f "$2" ] && cmp -s "$1" "$2"; then
        chmod "$3" "$2"
        say "unchanged  $2"
        return 0
    fi
    cp "$1" "$2.tmp.$$"
    chmod "$3" "$2.tmp.$$"
    mv -f "$2.tmp.$$" "$2"
    say "installed  $2"
}

remove_path() {
    if [ -e "$1" ] || [ -L "$1" ]; then
        rm -rf "$1"
        say "removed    $1"
    fi
}

# --- Uninstall -----------------------------------------------------------------------------------
if [ "$action" = uninstall ]; then
    if [ -f "$D$unit_path" ]; then
        run_systemctl disable --now adaptd.service ||
            say "warning: could not stop/disable adaptd.service (continuing)"
    fi
    remove_path "$D$bin_path"
    remove_path "$D$unit_path"
    remove_path "$D$models_path"
    rmdir "$D$prefix/share/adaptd" 2>/dev/null || true
    if [ "$purge" = yes ]; then
        remove_path "$D$dropin_path"
        remove_path "$D$config_dir"
        # With DynamicUser=yes the data is in /var/lib/private/adaptd; /var/lib/adaptd links to it.
        remove_path "$D$state_link"
        remove_path "$D$state_private"
    fi
    run_systemctl daemon-reload
    if [ "$scratch" = no ] && systemd_running; then
        systemctl reset-failed adaptd.service >/dev/null 2>&1 || true
    fi
    if [ "$purge" = yes ]; then
        say "adaptd removed, with its configuration and its samples and heads"
    else
        say "adaptd removed; kept $D$config_dir (configuration) and $D$state_link (samples and heads): --purge removes them"
    fi
    exit 0
fi

# --- Install: check everything before writing anything --------------------------------------------
[ -e "$binary" ] || die "no binary at '$binary': build it (cargo build --release, or cross/build) or pass --binary PATH"
{ [ -f "$binary" ] && [ -x "$binary" ]; } || die "'$binary' is not an executable file"
[ -f "$here/adaptd.service" ] || die "missing $here/adaptd.service (run the script from the source tree or the release tarball)"
[ -f "$here/adaptd.toml" ] || die "missing $here/adaptd.toml (run the script from the source tree or the release tarball)"

# The model files to install, and their checksums.
model_files=
if [ -d "$models" ]; then
    for f in "$models"/*.onnx "$models"/*.txt "$models"/*.toml; do
        [ -f "$f" ] && model_files="$model_files
$f"
    done
elif [ "$models_given" = yes ]; then
    die "--models '$models' is not a directory"
fi

# The value of a top-level `KEY = "VALUE"` line of a TOML manifest (before the first [table]).
manifest_value() {
    sed -n '/^[[:space:]]*\[/q; s/^[[:space:]]*'"$2"'[[:space:]]*=[[:space:]]*"\([^"]*\)".*/\1/p' "$1" | head -n 1
}
bad_sums=
missing=
check_sum() { # manifest file-key sha-key
    file=$(manifest_value "$1" "$2")
    want=$(manifest_value "$1" "$3")
    { [ -n "$file" ] && [ -n "$want" ]; } || return 0
    case $file in */*) return 0 ;; esac
    if [ ! -f "$models/$file" ]; then
        missing="$missing $file"
        return 0
    fi
    got=$(sha256sum "$models/$file" | cut -d ' ' -f 1)
    if [ "$got" != "$(echo "$want" | tr 'A-F' 'a-f')" ]; then
        bad_sums="$bad_sums
  $models/$file: sha256 $got, but $(basename "$1") says $want"
    fi
}
if [ -n "$model_files" ]; then
    if command -v sha256sum >/dev/null 2>&1; then
        for m in "$models"/*.toml; do
            [ -f "$m" ] || continue
            missing=
            check_sum "$m" file sha256
            check_sum "$m" labels labels_sha256
            [ -z "$missing" ] ||
                say "models: $(basename "$m" .toml) will not be usable, not in $models:$missing"
        done
        [ -z "$bad_sums" ] || die "model files do not match their manifests (nothing was installed):$bad_sums
re-fetch them: models/fetch --dest $models"
        say "models: checksums of the files named in the manifests verified"
    else
        say "models: sha256sum not found, checksums not verified here (adaptd verifies them when it loads a model)"
    fi
fi

# --- Install -------------------------------------------------------------------------------------
[ "$scratch" = no ] || say "installing into the scratch root $D (DESTDIR)"

put_file "$binary" "$D$bin_path" 0755

tmp_unit=$(mktemp)
trap 'rm -f "$tmp_unit"' EXIT
trap 'exit 130' INT TERM
sed -e "s#/usr/bin/adaptd#$bin_path#g" -e "s#/usr/share/adaptd/models#$models_path#g" \
    "$here/adaptd.service" > "$tmp_unit"
put_file "$tmp_unit" "$D$unit_path" 0644

mkdir -p "$D$config_dir"
chmod 0755 "$D$config_dir"
if [ ! -e "$D$config_path" ]; then
    put_file "$here/adaptd.toml" "$D$config_path" 0644
elif cmp -s "$here/adaptd.toml" "$D$config_path"; then
    say "unchanged  $D$config_path"
    # A .new left by an earlier run is stale once the configuration is the default again.
    if [ -f "$D$config_path.new" ] && cmp -s "$here/adaptd.toml" "$D$config_path.new"; then
        remove_path "$D$config_path.new"
    fi
else
    put_file "$here/adaptd.toml" "$D$config_path.new" 0644
    say "kept your $D$config_path; the new default configuration is $D$config_path.new (compare: diff $D$config_path $D$config_path.new)"
fi

if [ -n "$model_files" ]; then
    mkdir -p "$D$models_path"
    chmod 0755 "$D$models_path"
    echo "$model_files" | while IFS= read -r f; do
        [ -n "$f" ] || continue
        put_file "$f" "$D$models_path/$(basename "$f")" 0644
    done
else
    say "warning: no model files installed (no *.onnx/*.txt/*.toml in '$models'); fetch them with"
    say "         models/fetch --dest $D$models_path"
fi

run_systemctl daemon-reload
if [ "$start" = no ]; then
    say "not enabled or started (--no-start): systemctl enable --now adaptd"
elif [ "$scratch" = yes ]; then
    run_systemctl enable --now adaptd.service
elif systemd_running && systemctl is-active --quiet adaptd.service; then
    run_systemctl enable adaptd.service
    run_systemctl restart adaptd.service ||
        die "adaptd did not restart: see systemctl status adaptd; journalctl -u adaptd -e"
else
    run_systemctl enable --now adaptd.service ||
        die "adaptd did not start: see systemctl status adaptd; journalctl -u adaptd -e"
fi
say "done. Check it with: systemctl status adaptd; journalctl -u adaptd -f"
