#!/bin/sh
printf 'Content-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello world'
