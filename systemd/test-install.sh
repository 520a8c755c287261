#!/bin/sh
# Tests systemd/install.sh in a scratch root (DESTDIR): install, re-install, a modified
# configuration, --uninstall, --purge, --prefix, --no-start, bad options, a corrupted model file,
# and the refusal to run without root. Never touches the real system and never runs systemctl
# (a stub on PATH fails the test if it is called).
#
# usage: sh systemd/test-install.sh BINARY     (BINARY: any executable, e.g. /bin/true)
# Exit status: 0 all passed; 1 the first failure, with a message; 2 usage error.
set -eu

me=test-install.sh
here=$(cd "$(dirname "$0")" && pwd)
install_sh=$here/install.sh

[ $# -eq 1 ] || { echo "usage: sh systemd/test-install.sh BINARY" >&2; exit 2; }
binary=$1
{ [ -f "$binary" ] && [ -x "$binary" ]; } || { echo "$me: '$binary' is not an executable file" >&2; exit 2; }
case $binary in /*) ;; *) binary=$(pwd)/$binary ;; esac

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
trap 'exit 130' INT TERM
root=$work/root
out=$work/out
step=setup

fail() {
    echo "$me: FAIL [$step]: $*" >&2
    if [ -s "$out" ]; then
        echo "$me: output of the last install.sh run:" >&2
        sed 's/^/    /' "$out" >&2
    fi
    exit 1
}
pass() { echo "$me: ok   [$step] $*"; }

# Runs install.sh with the given arguments; the exit status is in $rc, the output in $out.
run() {
    rc=0
    sh "$install_sh" "$@" > "$out" 2>&1 || rc=$?
}
expect_rc() { [ "$rc" -eq "$1" ] || fail "exit status $rc, expected $1"; }
expect_out() { grep -q -- "$1" "$out" || fail "output does not contain '$1'"; }
expect_no_out() { ! grep -q -- "$1" "$out" || fail "output contains '$1'"; }
mode() { stat -c %a "$1"; }
expect_file() { # path mode
    [ -f "$1" ] || fail "missing file $1"
    [ "$(mode "$1")" = "$2" ] || fail "$1 has mode $(mode "$1"), expected $2"
}
expect_dir() { # path mode
    [ -d "$1" ] || fail "missing directory $1"
    [ "$(mode "$1")" = "$2" ] || fail "$1 has mode $(mode "$1"), expected $2"
}
expect_gone() { { [ ! -e "$1" ] && [ ! -L "$1" ]; } || fail "$1 should not exist"; }
expect_same() { cmp -s "$1" "$2" || fail "$2 differs from $1"; }
expect_line() { grep -qx -- "$2" "$1" || fail "$1 has no line '$2'"; }

# A systemctl stub that records calls: the scratch-root mode must never call it.
mkdir -p "$work/bin"
cat > "$work/bin/systemctl" <<EOF
#!/bin/sh
echo "systemctl \$*" >> "$work/systemctl.calls"
exit 0
EOF
chmod 0755 "$work/bin/systemctl"
PATH=$work/bin:$PATH
export PATH
expect_no_systemctl() {
    [ ! -e "$work/systemctl.calls" ] || fail "systemctl was called: $(cat "$work/systemctl.calls")"
}

# Fake models: a model and a labels file named by a manifest with their real sha256, a loose
# file, and files install.sh must not copy.
models=$work/models
mkdir -p "$models"
printf 'not really onnx\n' > "$models/tiny.onnx"
printf 'cat\ndog\n' > "$models/tiny_labels.txt"
printf 'extra\n' > "$models/extra.txt"
printf '# readme\n' > "$models/README.md"
printf '#!/bin/sh\n' > "$models/fetch"
if command -v sha256sum >/dev/null 2>&1; then
    sum() { sha256sum "$1" | cut -d ' ' -f 1; }
    model_sum=$(sum "$models/tiny.onnx")
    labels_sum=$(sum "$models/tiny_labels.txt")
    have_sha=yes
else
    model_sum=0000
    labels_sum=0000
    have_sha=no
fi
cat > "$models/tiny.toml" <<EOF
name = "tiny"
file = "tiny.onnx"
sha256 = "$model_sum"
kind = "vision"
task = "classify"
labels = "tiny_labels.txt"
labels_sha256 = "$labels_sum"

[input]
file = "not-a-model-file.onnx"
EOF

default_config=$here/adaptd.toml
bin=$root/usr/bin/adaptd
unit=$root/etc/systemd/system/adaptd.service
config=$root/etc/adaptd/adaptd.toml
mdir=$root/usr/share/adaptd/models

# --- 1. first install (DESTDIR from the environment) ---------------------------------------------
step=install
rc=0
DESTDIR=$root sh "$install_sh" --binary "$binary" --models "$models" > "$out" 2>&1 || rc=$?
expect_rc 0
expect_file "$bin" 755
expect_same "$binary" "$bin"
expect_file "$unit" 644
expect_same "$here/adaptd.service" "$unit"
expect_line "$unit" 'ExecStart=/usr/bin/adaptd run --config /etc/adaptd/adaptd.toml'
expect_line "$unit" 'Environment=ADAPTD_MODEL_DIR=/usr/share/adaptd/models'
expect_dir "$root/etc/adaptd" 755
expect_file "$config" 644
expect_same "$default_config" "$config"
expect_gone "$config.new"
expect_dir "$mdir" 755
for f in tiny.onnx tiny_labels.txt extra.txt tiny.toml; do
    expect_file "$mdir/$f" 644
    expect_same "$models/$f" "$mdir/$f"
done
expect_gone "$mdir/README.md"
expect_gone "$mdir/fetch"
[ "$have_sha" = no ] || expect_out 'checksums of the files named in the manifests verified'
expect_out 'would run: systemctl daemon-reload'
expect_out 'would run: systemctl enable --now adaptd.service'
expect_no_systemctl
# Nothing outside the expected files (state is created by systemd, not by the script).
extra=$(cd "$root" && find . -type f ! -path ./usr/bin/adaptd ! -path ./etc/systemd/system/adaptd.service \
    ! -path ./etc/adaptd/adaptd.toml ! -path './usr/share/adaptd/models/*')
[ -z "$extra" ] || fail "unexpected files installed: $extra"
pass "binary 755, unit 644, /etc/adaptd 755 + adaptd.toml 644, models 755/644, no systemctl"

# --- 2. install again: idempotent ----------------------------------------------------------------
step=reinstall
run --destdir "$root" --binary "$binary" --models "$models"
expect_rc 0
expect_out "unchanged  $bin"
expect_out "unchanged  $config"
expect_same "$default_config" "$config"
expect_gone "$config.new"
expect_file "$bin" 755
expect_no_systemctl
pass "second run changes nothing, config untouched"

# --- 3. a modified configuration is kept, the new default goes to .new ---------------------------
step=modified-config
printf '\n# changed by the user\n' >> "$config"
cp "$config" "$work/user.toml"
run --destdir "$root" --binary "$binary" --models "$models"
expect_rc 0
expect_same "$work/user.toml" "$config"
expect_file "$config.new" 644
expect_same "$default_config" "$config.new"
expect_out 'adaptd.toml.new'
run --destdir "$root" --binary "$binary" --models "$models"
expect_rc 0
expect_same "$work/user.toml" "$config"
expect_same "$default_config" "$config.new"
pass "user's adaptd.toml kept, default written as adaptd.toml.new (twice)"

# --- 4. --uninstall keeps configuration and state ------------------------------------------------
step=uninstall
# What systemd creates for StateDirectory= with DynamicUser=yes, and a user's drop-in.
mkdir -p "$root/var/lib/private/adaptd/heads"
printf 'db\n' > "$root/var/lib/private/adaptd/samples.db"
ln -s private/adaptd "$root/var/lib/adaptd"
mkdir -p "$root/etc/systemd/system/adaptd.service.d"
printf '[Service]\nLoadCredential=mqtt-password:/etc/adaptd/mqtt-password\n' \
    > "$root/etc/systemd/system/adaptd.service.d/override.conf"
printf 'secret\n' > "$root/etc/adaptd/mqtt-password"
run --uninstall --destdir "$root"
expect_rc 0
expect_gone "$bin"
expect_gone "$unit"
expect_gone "$mdir"
expect_gone "$root/usr/share/adaptd"
expect_same "$work/user.toml" "$config"
[ -f "$root/etc/adaptd/mqtt-password" ] || fail "the password file was removed"
[ -f "$root/var/lib/adaptd/samples.db" ] || fail "the samples were removed"
[ -f "$root/etc/systemd/system/adaptd.service.d/override.conf" ] || fail "the drop-in was removed"
expect_out 'would run: systemctl disable --now adaptd.service'
expect_out 'would run: systemctl daemon-reload'
expect_out '--purge'
expect_no_systemctl
run --uninstall --destdir "$root"
expect_rc 0
pass "binary, unit and models gone; /etc/adaptd, /var/lib/adaptd and drop-ins kept; repeatable"

# --- 5. --prefix and --no-start ------------------------------------------------------------------
step=prefix
run --destdir "$root" --prefix /usr/local/ --no-start --binary "$binary" --models "$models"
expect_rc 0
expect_file "$root/usr/local/bin/adaptd" 755
expect_file "$root/usr/local/share/adaptd/models/tiny.onnx" 644
expect_line "$unit" 'ExecStart=/usr/local/bin/adaptd run --config /etc/adaptd/adaptd.toml'
expect_line "$unit" 'Environment=ADAPTD_MODEL_DIR=/usr/local/share/adaptd/models'
expect_gone "$bin"
expect_same "$work/user.toml" "$config"
expect_out 'would run: systemctl daemon-reload'
expect_no_out 'would run: systemctl enable'
expect_no_systemctl
run --uninstall --prefix /usr/local --destdir "$root"
expect_rc 0
expect_gone "$root/usr/local/bin/adaptd"
expect_gone "$root/usr/local/share/adaptd"
pass "--prefix /usr/local moves binary, models, ExecStart= and ADAPTD_MODEL_DIR; --no-start"

# --- 6. --purge removes everything ---------------------------------------------------------------
step=purge
run --destdir "$root" --binary "$binary" --models "$models"
expect_rc 0
run --purge --destdir "$root"
expect_rc 0
for p in "$bin" "$unit" "$mdir" "$root/etc/adaptd" "$root/var/lib/adaptd" \
    "$root/var/lib/private/adaptd" "$root/etc/systemd/system/adaptd.service.d"; do
    expect_gone "$p"
done
left=$(cd "$root" && find . ! -type d)
[ -z "$left" ] || fail "files left after --purge: $left"
expect_no_systemctl
pass "nothing left but empty directories"

# --- 7. usage errors -----------------------------------------------------------------------------
step=bad-options
run --destdir "$root" --bogus
expect_rc 2
expect_out "unknown option '--bogus'"
run --destdir "$root" --binary
expect_rc 2
expect_out '--binary needs a value'
run --destdir "$root" --prefix usr/local --binary "$binary"
expect_rc 2
expect_out 'must be an absolute path'
run --destdir "$root" stray
expect_rc 2
expect_out "unexpected argument 'stray'"
run --destdir "$root" --binary "$work/no-such-binary"
expect_rc 1
expect_out 'no binary at'
run --destdir "$root" --binary "$binary" --models "$work/no-such-dir"
expect_rc 1
expect_out 'is not a directory'
run --help
expect_rc 0
expect_out '--uninstall'
left=$(cd "$root" && find . ! -type d)
[ -z "$left" ] || fail "a failed run installed files: $left"
pass "unknown option, missing value, relative prefix, stray argument: 2; missing binary/models: 1"

# --- 8. a model file that does not match its manifest is refused ---------------------------------
step=checksum
if [ "$have_sha" = yes ]; then
    printf 'corrupted\n' > "$models/tiny.onnx"
    run --destdir "$root" --binary "$binary" --models "$models"
    expect_rc 1
    expect_out 'do not match their manifests'
    expect_out 'tiny.onnx'
    left=$(cd "$root" && find . ! -type d)
    [ -z "$left" ] || fail "files installed despite a bad checksum: $left"
    pass "corrupted model refused before anything is installed"
else
    echo "$me: skip [checksum] sha256sum not found"
fi

# --- 9. without DESTDIR, non-root is refused -----------------------------------------------------
step=needs-root
# An `id` that says uid 1000. The binary does not exist either, so even a broken root check
# could not install anything into the real system.
cat > "$work/bin/id" <<'EOF'
#!/bin/sh
if [ "${1:-}" = -u ]; then echo 1000; else echo 'uid=1000(user) gid=1000(user)'; fi
EOF
chmod 0755 "$work/bin/id"
rc=0
env -u DESTDIR sh "$install_sh" --binary "$work/no-such-binary" > "$out" 2>&1 || rc=$?
expect_rc 1
expect_out 'needs root'
expect_no_systemctl
rm -f "$work/bin/id"
pass "refused without root and without DESTDIR"

echo "$me: all passed"
