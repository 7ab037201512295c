mod vault;
