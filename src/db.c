/* db.c — placeholder until the module lands. */
