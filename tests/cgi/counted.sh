#!/bin/sh
# counts its runs in runs.log beside the docroot, then redirects locally to a file
echo run >> "$DOCUMENT_ROOT/../runs.log"
printf 'Location: /target.txt\r\n\r\n'
