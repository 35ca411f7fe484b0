#!/usr/bin/env bash
# Placeholder until the launch work lands: installs nothing yet.
exit 0
