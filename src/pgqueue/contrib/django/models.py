"""No models: the module makes Django send this app ``post_migrate``, after which
pgqueue's schema is migrated too (``PGQUEUE["MIGRATE"]``)."""
