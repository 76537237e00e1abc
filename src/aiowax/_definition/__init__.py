"""The plain-data side of aiowax: what users build before anything runs."""
