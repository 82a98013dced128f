#!/bin/sh
echo "a body without a head"
