/* catalog.c — placeholder until the module lands. */
