"""Column names of the input contract, the output rows and the internal columns.

Named once here so a rename is one edit and a typo is an ImportError, not a
silently empty column.
"""

# --- Input contract -----------------------------------------------------------
USER_ID = "user_id"
PRODUCT_ID = "product_id"
CHANNEL = "channel"
CAMPAIGN_ID = "campaign_id"
LOCALE = "locale"

PAIRS_REQUIRED = (USER_ID, PRODUCT_ID)
PAIRS_OPTIONAL = (CHANNEL, CAMPAIGN_ID)

USERS_REQUIRED = (USER_ID, LOCALE)
USERS_LIST_FIELDS = ("interests", "recent_views", "recent_searches", "recent_purchases")
USERS_OPTIONAL = USERS_LIST_FIELDS + ("age_band", "loyalty_tier")
# What a row carries of its user from pass 1 on (factory/stages/users.py), the
# user's id aside: every later stage reads the user from the row.
USER_COLUMNS = (LOCALE,) + USERS_OPTIONAL

PRODUCTS_REQUIRED = (PRODUCT_ID, "title", "category", "brand", "price", "currency", "description")
PRODUCTS_OPTIONAL = ("attributes", "selling_points")
# Attached by the pipeline, not read from the catalog: the product's facts as
# JSON (factory.facts), extracted or else the catalog's selling points.
FACTS = "facts"
# What a row knows of its product, wherever a stage reads the catalog: its
# columns besides the id, then its facts.
PRODUCT_FIELDS = (
    ("title", "brand", "category", "price", "currency", "description") + PRODUCTS_OPTIONAL + (FACTS,)
)

# --- Output rows ----------------------------------------------------------------
# Stable id of one output row: a hash of run id, campaign, user, product,
# channel and variant. Resume skips rows whose id is already written; a
# reader can deduplicate across runs with it.
ROW_ID = "row_id"
RUN_ID = "run_id"
RUN_DATE = "run_date"
VARIANT = "variant"
TEXT = "text"
TEMPLATE_VERSION = "template_version"
MODEL = "model"
NUM_INPUT_TOKENS = "num_input_tokens"
NUM_OUTPUT_TOKENS = "num_output_tokens"
# Prompt tokens the engine's prefix cache served (null when the engine did not say).
NUM_CACHED_TOKENS = "num_cached_tokens"
# Row id of the row whose generation this row reuses: its prompt was identical
# (same template, product, profile fields, locale, variant). Null when generated.
DEDUP_OF = "dedup_of"
FINISH_REASON = "finish_reason"
GENERATED_AT = "generated_at"

# Experiments (factory/experiments): the experiment a row's user is in, and
# the arm that wrote it (``holdout``: no copy, only in the holdout files).
# Null when the run's campaign has no experiment.
EXPERIMENT_ID = "experiment_id"
ARM = "arm"

# The quality gate's verdict (see factory/quality).
STATUS = "status"  # accepted | review | rejected
REASONS = "reasons"  # reason codes, list<string>
REASON_DETAILS = "reason_details"  # "code: what was found", list<string>
DRAFT = "draft"  # 1, or 2 for a repaired row (the generation's try; "attempt" is the run's)
FIRST_DRAFT_REASONS = "first_draft_reasons"  # why draft 1 was rejected (repaired rows)
NUMERIC_FIDELITY = "numeric_fidelity"  # share of the copy's numbers found in the product data
COPY_LENGTH = "copy_length"  # in the channel's unit (graphemes, display width, SMS units)
COPY_LENGTH_LIMIT = "copy_length_limit"
# The model judge (--judge): pass | flagged | unparsed, null when the row was not
# judged; and the prompt plus reply tokens it spent on the row.
JUDGE_VERDICT = "judge_verdict"
JUDGE_TOKENS = "judge_tokens"

# A row's identity as every pass carries it: its id, the pair, channel, variant and arm.
ROW_KEY = (ROW_ID, USER_ID, PRODUCT_ID, CHANNEL, CAMPAIGN_ID, VARIANT, EXPERIMENT_ID, ARM)

ACCEPTED, REVIEW, REJECTED = "accepted", "review", "rejected"
STATUSES = (ACCEPTED, REVIEW, REJECTED)

OUTPUT_COLUMNS = (
    ROW_ID,
    RUN_ID,
    RUN_DATE,
    CAMPAIGN_ID,
    USER_ID,
    PRODUCT_ID,
    CHANNEL,
    LOCALE,
    VARIANT,
    EXPERIMENT_ID,
    ARM,
    TEXT,
    STATUS,
    REASONS,
    REASON_DETAILS,
    DRAFT,
    FIRST_DRAFT_REASONS,
    NUMERIC_FIDELITY,
    COPY_LENGTH,
    COPY_LENGTH_LIMIT,
    JUDGE_VERDICT,
    JUDGE_TOKENS,
    DEDUP_OF,
    TEMPLATE_VERSION,
    MODEL,
    NUM_INPUT_TOKENS,
    NUM_OUTPUT_TOKENS,
    NUM_CACHED_TOKENS,
    FINISH_REASON,
    GENERATED_AT,
)

# --- Dead letters -----------------------------------------------------------------
REASON = "reason"
SOURCE = "source"  # the input file a row came from
SOURCE_ROW = "source_row"  # its 0-based row number in that file

# --- Internal (never written) -------------------------------------------------------
# The rendered chat, as JSON, handed to the engine stage.
MESSAGES = "__messages"
# Per-row generation cap: channels differ in how long their copy may be.
MAX_TOKENS = "__max_tokens"
# Per-row stop strings (list<string>): one-line channels stop at a newline.
STOP = "__stop"
# The model judge's chat (JSON) for a sampled row, null for the rest, and its reply.
JUDGE_MESSAGES = "__judge_messages"
JUDGE_REPLY = "__judge_reply"
# Where the writer sends a row: the published copies, or the repair queue.
ROUTE = "__route"
ROUTE_COPIES, ROUTE_REPAIR = "copies", "repair"
# On a reused row: its leader's tokens, the engine work the reuse saved
# (ReuseCopy sets them; the copies' footer adds them up, factory/footer.py).
SAVED_PROMPT_TOKENS = "__saved_prompt_tokens"
SAVED_OUTPUT_TOKENS = "__saved_output_tokens"
# Pass 1: true where the users table has the pair's user, null where it has not.
USER_FOUND = "__user_found"
