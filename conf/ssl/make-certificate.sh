#!/bin/sh
# Makes conf/ssl/server.pem, a self-signed certificate and key for localhost, when
# there is none yet, so that conf-available/10-ssl.conf serves HTTPS out of the box.
# Put your own certificate chain and key (PEM) there instead for real use.
# Run by 10-ssl.conf's include_shell: it prints nothing (its output is config).
pem="$(dirname "$0")/server.pem"
[ -e "$pem" ] && exit 0
key=$(mktemp) && crt=$(mktemp) || exit 0
if openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 365 \
        -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
        -keyout "$key" -out "$crt" >/dev/null 2>&1; then
    (umask 077 && cat "$crt" "$key" > "$pem.tmp" && mv "$pem.tmp" "$pem")
fi
rm -f "$key" "$crt"
exit 0
