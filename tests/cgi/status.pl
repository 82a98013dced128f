#!/usr/bin/perl
print "Status: 418 I am a teapot\r\nContent-Type: text/plain\r\nX-Extra: yes\r\n\r\nteapot\n";
