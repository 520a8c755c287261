#!/bin/sh
# Checks the systemd unit: `systemd-analyze verify` must print nothing, and the exposure level of
# `systemd-analyze security --offline=true` must be at most 2.0.
#
# usage: systemd/check-unit.sh [--max X.Y] [UNIT_FILE]
#        (default UNIT_FILE: adaptd.service next to this script)
#
# Needs systemd-analyze >= 250 (--offline); systemd need not be running (PID 1 may be anything).
# Exit status: 0 ok, 1 a check failed, 2 usage error, 77 systemd-analyze missing (skip).
#
# Why a copy is verified: `systemd-analyze verify` fails when ExecStart='s binary does not exist
# ("Command /usr/bin/adaptd is not executable"), which is the case on a build machine. The copy,
# in a temporary directory under the same name, has /usr/bin/adaptd replaced by an executable
# that exists; nothing else changes. Also, verify exits 0 after warnings such as "Unknown key"
# or "Failed to parse ... ignoring", so any output at all counts as a failure here.
set -eu

me=check-unit.sh
here=$(cd "$(dirname "$0")" && pwd)
max=2.0
unit=

while [ $# -gt 0 ]; do
    case $1 in
        --max) [ $# -ge 2 ] || { echo "$me: --max needs a value" >&2; exit 2; }; max=$2; shift 2 ;;
        --max=*) max=${1#--max=}; shift ;;
        -h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) echo "$me: unknown option '$1' (see --help)" >&2; exit 2 ;;
        *) [ -z "$unit" ] || { echo "$me: only one unit file" >&2; exit 2; }; unit=$1; shift ;;
    esac
done
[ -n "$unit" ] || unit=$here/adaptd.service
case $max in
    ''|*[!0-9.]*|*.*.*) echo "$me: --max wants a number such as 2.0, not '$max'" >&2; exit 2 ;;
esac
[ -f "$unit" ] || { echo "$me: no such unit file: $unit" >&2; exit 2; }
if ! command -v systemd-analyze >/dev/null 2>&1; then
    echo "$me: SKIP: systemd-analyze not found (Debian: apt-get install systemd)" >&2
    exit 77
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM
name=$(basename "$unit")

# 1. verify, on a copy whose ExecStart points at an existing executable.
true_bin=$(command -v true)
case $true_bin in /*) ;; *) true_bin=/bin/true ;; esac
cp "$true_bin" "$tmp/adaptd"
sed "s#/usr/bin/adaptd#$tmp/adaptd#g" "$unit" > "$tmp/$name"
if ! systemd-analyze verify "$tmp/$name" > "$tmp/verify.out" 2>&1; then
    echo "$me: FAIL: systemd-analyze verify $unit:" >&2
    sed "s#$tmp/##g; s#^#  #" "$tmp/verify.out" >&2
    exit 1
fi
if [ -s "$tmp/verify.out" ]; then
    echo "$me: FAIL: systemd-analyze verify $unit printed warnings:" >&2
    sed "s#$tmp/##g; s#^#  #" "$tmp/verify.out" >&2
    exit 1
fi
echo "$me: systemd-analyze verify: ok (no warnings)"

# 2. security, on the file itself.
if ! systemd-analyze security --offline=true --no-pager "$unit" > "$tmp/security.out" 2> "$tmp/security.err"; then
    echo "$me: FAIL: systemd-analyze security --offline=true $unit failed:" >&2
    sed 's/^/  /' "$tmp/security.err" >&2
    exit 1
fi
level=$(sed -n 's/.*Overall exposure level for [^:]*: *\([0-9][0-9]*\.[0-9]\).*/\1/p' "$tmp/security.out" | head -n 1)
if [ -z "$level" ]; then
    echo "$me: FAIL: no \"Overall exposure level\" line in the output of systemd-analyze security:" >&2
    sed 's/^/  /' "$tmp/security.out" "$tmp/security.err" >&2
    exit 1
fi
echo "$me: remaining exposures:"
grep '✗' "$tmp/security.out" | sed 's/  */ /g; s/^/  /' || true
if awk -v l="$level" -v m="$max" 'BEGIN { exit !(l + 0 > m + 0) }'; then
    echo "$me: FAIL: exposure level $level is above $max" >&2
    exit 1
fi
echo "$me: exposure level $level (at most $max): ok"
