#!/usr/bin/perl
use Digest::SHA qw(sha256_hex);
binmode STDIN;
local $/;
my $data = <STDIN>;
$data = "" unless defined $data;
printf "Content-Type: text/plain\r\n\r\nmethod=%s content-length=%s read=%d\n%s\n",
    $ENV{REQUEST_METHOD}, $ENV{CONTENT_LENGTH}, length($data), sha256_hex($data);
