#!/bin/sh
# X-Sendfile2 is FastCGI's: a CGI's passes through as an ordinary header
printf 'X-Sendfile2: %s 0-3\r\nContent-Type: text/plain\r\n\r\nown body' "$QUERY_STRING"
