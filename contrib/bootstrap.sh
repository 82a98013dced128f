#!/usr/bin/env bash
# Set up (once; safe to run again) and then run pylighttpd or its test suite.
#   bash contrib/bootstrap.sh serve   -> the server on conf/pylighttpd.conf, in the foreground
#   bash contrib/bootstrap.sh test    -> the whole test suite
#   bash contrib/bootstrap.sh bench   -> loadtests/bench.py against lighttpd and nginx
# Installs what it needs: Debian packages through apt-get when run as root (the
# reference lighttpd the differential tests compare with, curl, openssl), a virtualenv
# in .venv, and the Python packages of pyproject.toml.
set -euo pipefail
cd "$(dirname "$0")/.."

mode="${1:-}"
case "$mode" in serve|test|bench) ;; *) echo "usage: $0 serve|test|bench" >&2; exit 2 ;; esac

# a C compiler and Python's headers compile the worker's hot path (contrib/compile.py)
debian_packages=(python3-venv gcc python3-dev)
# the tests compare with the real lighttpd, scrape with a real Prometheus, render the
# status page in Chromium and check the unit files with systemd-analyze; they run real
# backends (php-cgi, php-fpm, uwsgi), real clients (nghttp, Apache's htpasswd) and a
# real HAProxy in front; strace watches which system calls send a file, libfaketime
# moves the server's wall clock
gateway_packages=(php-cgi php-fpm uwsgi-core uwsgi-plugin-python3)
[ "$mode" = test ] && debian_packages+=(lighttpd curl openssl prometheus chromium systemd wrk
  "${gateway_packages[@]}" lighttpd-mod-deflate lighttpd-mod-webdav lighttpd-mod-openssl
  lighttpd-mod-maxminddb lighttpd-modules-lua rrdtool litmus cadaver
  apache2-utils nghttp2-client haproxy slapd ldap-utils mariadb-server postgresql strace faketime
  lighttpd-modules-ldap lighttpd-modules-dbi lighttpd-mod-authn-pam lighttpd-mod-authn-sasl sasl2-bin
  lighttpd-mod-vhostdb-pgsql lighttpd-modules-mysql libdbd-sqlite3 libdbd-pgsql libdbd-mysql)
[ "$mode" = bench ] && debian_packages+=(lighttpd nginx wrk "${gateway_packages[@]}"
  lighttpd-mod-openssl lighttpd-mod-deflate lighttpd-mod-webdav lighttpd-modules-lua
  apache2-utils nghttp2-client openssl)

missing=()
for package in "${debian_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    echo "slapd slapd/no_configuration boolean true" | debconf-set-selections 2>/dev/null || true
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # these packages start services; tests and benchmarks run their own instances.
    for service in lighttpd nginx prometheus php8.2-fpm haproxy slapd mariadb postgresql saslauthd; do
      service "$service" stop >/dev/null 2>&1 || true
    done
  else
    echo "note: not root; Debian packages not installed: ${missing[*]}" >&2
  fi
fi

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv 2>/dev/null || { rm -rf .venv; "$python" -m venv --without-pip .venv; }
fi
if ! .venv/bin/python -m pip --version >/dev/null 2>&1; then
  .venv/bin/python -m ensurepip --upgrade >/dev/null
fi
stamp=.venv/.installed-$(sha1sum pyproject.toml | cut -c1-12)
if [ ! -e "$stamp" ]; then
  .venv/bin/python -m pip install -q --disable-pip-version-check -e ".[test,compile]"
  touch "$stamp"
fi
# the hot path in C when a compiler is there (a no-op while the build is current);
# without one everything runs as Python
if ! .venv/bin/python contrib/compile.py >.venv/compile.log 2>&1; then
  echo "note: $(tail -n 1 .venv/compile.log)" >&2
fi

if [ "$mode" = serve ]; then
  exec .venv/bin/pylighttpd -D -f conf/pylighttpd.conf
fi
if [ "$mode" = bench ]; then
  exec .venv/bin/python loadtests/bench.py "${@:2}"
fi
exec .venv/bin/python -m pytest -q -p no:cacheprovider -n 2 tests "${@:2}"
