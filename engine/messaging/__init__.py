"""Messaging: templates, the one dispatch path, transactional sends, the message ledger, tracking and provider feedback."""
