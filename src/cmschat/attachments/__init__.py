"""Attachments: safe upload, permission-checked download, local and S3 storage."""
