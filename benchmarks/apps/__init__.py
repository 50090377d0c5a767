"""The worker applications the libraries' own command lines load (one module per library)."""
