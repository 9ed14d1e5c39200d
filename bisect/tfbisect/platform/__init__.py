"""The machine under the tool: child processes with a hard timeout and a bounded log, killed
with their driver and on a stop signal (between the environments and the core)."""
