#!/usr/bin/perl
$| = 1;
print "Transfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\r\n";
print "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
