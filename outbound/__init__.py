"""Outbound deliveries: alert notices to people, readings to other systems.

See docs/notifications.md.
"""
