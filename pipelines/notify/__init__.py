"""Where every layer tells a human: the alert log (`alerts`) and the on-call pager (`paging`).

These are channels, not decisions: the intake alerts on a quarantined batch and the registry
pages on an unapproved champion from here, as do monitoring and the flows. *When* to alert or
page (N-of-M windows, shadow evidence) is monitoring's: `monitoring.notify.rules`,
`monitoring.decisions`.
"""
