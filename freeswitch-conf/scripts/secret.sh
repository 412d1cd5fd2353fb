#!/bin/sh
# Prints a secret for vars.xml's exec-set: the environment variable named by $1 when set and non-empty,
# else 32 random hex digits, so no worker ever runs with a known default (an empty esl_password would
# make mod_event_socket fall back to "ClueCon"). Ansible renders real values into vars.xml instead.
if [ -n "$1" ] && eval "[ -n \"\${$1:-}\" ]"; then
    eval "printf '%s' \"\${$1}\""
else
    od -An -N16 -tx1 /dev/urandom | tr -d ' \n'
fi
