#!/bin/sh
# never answers: the read timeout ends it (its child sleep too)
sleep 30
