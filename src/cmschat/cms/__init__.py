"""The console's content: notices, canned replies, moderation, and the admin overview."""
