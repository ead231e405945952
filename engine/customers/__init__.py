"""Customers: users, endpoints, events, attributes, and the on-write listener list the domains above register on."""
