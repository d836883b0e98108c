"""Product facts: selling points and normalized attributes extracted once per
product content (``extract``), in the shape ``schema`` defines, kept in the
facts table (``store``) keyed by product id and content hash."""
