#!/bin/sh
printf 'Content-Length: 100\r\nContent-Type: text/plain\r\n\r\nonly this'
