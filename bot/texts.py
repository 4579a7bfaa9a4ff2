"""Consumer-facing wording, in one place so it can be reviewed for tone.

Many users are elderly: sentences are short, warm and plain, and every dead end names a
person to call.
"""

from __future__ import annotations

from bot.messages import Button

MENU_BUTTONS = (
    Button("问一问金融知识", "topics"),
    Button("帮我看看是不是诈骗", "check"),
    Button("我要投诉", "complaint"),
    Button("查投诉进度", "status"),
    Button("使用帮助", "help"),
)
BACK_TO_MENU = Button("回主菜单", "menu")

# The topic menu, grouped so no screen shows more than a handful of buttons.
TOPIC_GROUPS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("fraud", "防诈骗、防非法集资", (
        "telecom-fraud", "illegal-fundraising", "investment-scam", "card-fraud",
        "illegal-lending", "loan-intermediary", "illegal-financial-ads",
    )),
    ("black", "代理退保、征信修复等黑产", (
        "agent-surrender", "credit-repair-scam", "flying-orders", "excessive-service",
        "vehicle-pooling", "insurance-fraud",
    )),
    ("rights", "我的八项权利", (
        "consumer-rights", "right-property-safety", "right-to-know", "right-of-choice",
        "right-fair-trade", "right-to-compensation", "right-to-education", "right-to-respect",
        "right-info-security",
    )),
    ("products", "保险、理财与养老", (
        "car-insurance", "insurance-claims", "insurance-surrender", "pension-insurance",
        "wealth-management",
    )),
    ("people", "投诉办理与一老一少、新市民", (
        "complaint-process", "elderly-finance", "student-finance", "new-citizen-services",
    )),
)


def greeting(service_name: str) -> str:
    """The first thing a new user reads."""
    return (
        f"您好！我是{service_name}。\n"
        "我可以：解答银行、保险方面的疑问；帮您看看收到的短信、电话是不是诈骗；"
        "帮您向银行或保险公司投诉，并查询处理进度。\n"
        "您可以直接打字问我，也可以点下面的按钮。"
    )


def help_text(hotline: str) -> str:
    """How to use the bot, in plain words."""
    return (
        "使用方法很简单：\n"
        "1. 直接打字提问，比如“有人让我把钱转到安全账户”“退保黑产是什么”。\n"
        "2. 收到可疑短信，点“帮我看看是不是诈骗”，再把短信内容发给我。\n"
        "3. 想投诉银行或保险公司，点“我要投诉”，我会一步一步问您。\n"
        "4. 随时发“菜单”回到主菜单。\n"
        f"我是自动回复的小助手，拿不准的时候请拨打{hotline}银行保险消费者投诉维权热线；"
        "遇到诈骗请立即拨打110或96110。"
    )


def not_sure(hotline: str) -> str:
    """What the bot says instead of guessing."""
    return (
        "这个问题我不太有把握，怕答错了耽误您。\n"
        "您可以换个说法再问我，或者看看下面是不是您想问的。\n"
        f"也可以拨打{hotline}银行保险消费者投诉维权热线咨询；"
        "如果遇到了诈骗，请马上拨打110或96110。"
    )


def out_of_scope(hotline: str) -> str:
    """For messages that are not about banking, insurance or fraud."""
    return (
        "抱歉，我只会回答银行、保险、防诈骗和金融消费者权益方面的问题。\n"
        f"您可以点下面的菜单看看，或拨打{hotline}银行保险消费者投诉维权热线。"
    )


def empty_message() -> str:
    """For an empty or unreadable message."""
    return "我没有看到文字内容。请直接打字告诉我您想问什么，或者点下面的按钮。"


def thanks() -> str:
    """Reply to thanks."""
    return "不客气！还有别的问题随时问我。遇到可疑情况，先停一停、问一问，再转账。"


def injection(hotline: str) -> str:
    """For attempts to make the bot leave its role."""
    return (
        "我是金融消费者权益保护小助手，只能回答银行、保险和防诈骗方面的问题。\n"
        f"需要人工帮助请拨打{hotline}。"
    )


def suggestion_intro() -> str:
    """Heading above "did you mean" buttons."""
    return "您是不是想问："


def topic_menu_intro() -> str:
    """Heading of the topic menu."""
    return "请选择您想了解的方面："


SCAM_TYPE_NAMES = {
    "impersonate-authority": "冒充公检法",
    "fake-customer-service": "冒充客服（退款、理赔、注销账户）",
    "order-brushing": "刷单返利",
    "investment-scam": "虚假投资理财",
    "fake-loan": "虚假贷款",
    "credit-repair": "“征信修复”骗局",
    "agent-surrender": "“代理退保”黑产",
    "illegal-fundraising": "非法集资",
    "phishing-link": "钓鱼链接",
    "card-renting": "买卖、出租银行卡和电话卡",
    "other": "其他诈骗（冒充熟人、中奖等）",
}

# The knowledge entry whose advice goes with each scam type.
SCAM_ADVICE_ENTRIES = {
    "impersonate-authority": "telecom-fraud-police-impersonation",
    "fake-customer-service": "telecom-fraud-fake-customer-service",
    "order-brushing": "telecom-fraud-brushing-orders",
    "investment-scam": "investment-scam-pig-butchering",
    "fake-loan": "loan-intermediary-upfront-fee",
    "credit-repair": "credit-repair-scam-delete-overdue",
    "agent-surrender": "agent-surrender-full-refund-ad",
    "illegal-fundraising": "illegal-fundraising-identify",
    "phishing-link": "telecom-fraud-verification-code",
    "card-renting": "card-fraud-card-buying-offer",
    "other": "telecom-fraud-impersonate-boss-acquaintance",
}

VERDICT_HEADINGS = {
    "scam": "🔴 这很可能是诈骗！",
    "suspicious": "🟠 这条信息有可疑之处，请提高警惕。",
    "safe": "🟢 暂时没有发现明显的诈骗特征。",
}


def scam_check_prompt() -> str:
    """Asking for the message to check."""
    return ("请把您收到的短信、微信聊天或对方说的话，原样复制粘贴发给我，我帮您看看。\n"
            "（只看文字，不会点开里面的链接，也不会拨打里面的电话。）")


def scam_check_offer() -> str:
    """Offered when a message looks like a pasted SMS."""
    return "这看起来像是您收到的一条短信或消息。要我帮您看看是不是诈骗吗？"
