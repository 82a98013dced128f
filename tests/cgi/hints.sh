#!/bin/sh
# 103 Early Hints ahead of the answer
printf 'Status: 103\r\nLink: </a.css>; rel=preload\r\n\r\n'
printf 'Status: 200\r\nContent-Type: text/plain\r\n\r\nbody\n'
