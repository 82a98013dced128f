#!/bin/sh
# its head with a Content-Length; a moment later (the head went out, when answers
# stream) the body, longer than it said
printf 'Content-Length: 5\r\nContent-Type: text/plain\r\n\r\n'
sleep 0.2
printf 'hello world'
