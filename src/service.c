/* service.c — placeholder until the module lands. */
