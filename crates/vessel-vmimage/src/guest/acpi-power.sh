#!/usr/lib/vessel/busybox sh
# ACPI power button: ask PID 1 (the Vessel init) for a clean power-off.
exec /usr/lib/vessel/busybox kill -USR2 1
