"""The citizen-facing QR page (``GET /q/<payload>``): one HTML template, Chinese and English.

Built for a phone held up to a counter: a large VALID / 有效 or NOT VALID / 无效
banner, the certificate's id, issuer and status, every check with a bilingual
label, and the disclosed fields. Jinja autoescaping (on for
``render_template_string``) keeps disclosed values from being read as HTML.
"""

from __future__ import annotations

from typing import Any, Final

from flask import render_template_string

CHECK_LABELS: Final = {
    "commit_certificate": ("共识签名", "Validators' commit certificate"),
    "state_proof": ("状态证明", "State proof"),
    "anchored": ("已上链", "Anchored on the ledger"),
    "integrity": ("内容完整", "Integrity of the shown fields"),
    "issuer_signature": ("签发机构签名", "Issuer signature"),
    "issuer_authorized": ("签发机构资格", "Issuer authorised for this type"),
    "status": ("证照状态", "Status"),
    "validity_period": ("有效期", "Validity period"),
    "not_superseded": ("未被替换", "Not superseded"),
    "presentation_expiry": ("出示时效", "Presentation not expired"),
}
FIELD_LABELS: Final = {
    "$holder": "持证人 Holder", "name": "姓名 Name", "degree": "学位 Degree",
    "major": "专业 Major", "university": "学校 University", "graduation_date":
    "毕业日期 Graduation date", "holder_key": "持证人公钥 Holder key",
    "student_number": "学号 Student number", "id_number": "身份证件号 ID number",
    "company_name": "企业名称 Company", "legal_representative": "法定代表人 Legal representative",
    "registered_capital": "注册资本 Registered capital", "business_scope": "经营范围 Scope",
    "established": "成立日期 Established", "uscc": "统一社会信用代码 Credit code",
}
STATUS_LABELS: Final = {"issued": "有效 issued", "suspended": "暂停 suspended",
                        "revoked": "已撤销 revoked", "superseded": "已替换 superseded"}

_PAGE: Final = """<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>{{ title }} · 电子证照核验 Certificate check</title>
<style>
body{font-family:system-ui,-apple-system,"PingFang SC","Microsoft YaHei",sans-serif;margin:0;
 background:#f4f5f7;color:#1d1d1f}
main{max-width:640px;margin:0 auto;padding:16px}
.banner{border-radius:14px;padding:28px 16px;text-align:center;color:#fff;margin-bottom:16px}
.ok{background:#1a7f37}.bad{background:#c62828}.err{background:#6e6e73}
.banner .big{font-size:clamp(1.6rem,8.5vw,2.6rem);font-weight:800;letter-spacing:.04em;
 white-space:nowrap}
.banner .sub{font-size:1.05rem;margin-top:6px}
.banner .why{margin:14px 0 0;padding:10px 12px;border-radius:10px;background:rgba(0,0,0,.18);
 text-align:left;font-size:.95rem;line-height:1.4}
.banner .why b{display:block}
section{background:#fff;border-radius:12px;padding:12px 16px;margin-bottom:12px}
h2{font-size:1rem;margin:4px 0 10px;color:#555}
dl{margin:0}dt{color:#666;font-size:.85rem;margin-top:8px}dd{margin:2px 0 0;font-size:1.05rem;
 word-break:break-all}
ul{list-style:none;padding:0;margin:0}li{padding:8px 0;border-top:1px solid #eee}
li:first-child{border-top:0}.mark{font-weight:700;margin-right:6px}
.pass .mark{color:#1a7f37}.fail .mark{color:#c62828}.detail{color:#666;font-size:.85rem}
li.fail{background:#fdecea;margin:0 -16px;padding:8px 16px}
footer{color:#888;font-size:.8rem;text-align:center;margin:16px 0}
</style></head><body><main>
{% if verdict %}
<div class="banner {{ 'ok' if verdict.valid else 'bad' }}">
 <div class="big">{{ '有效 VALID' if verdict.valid else '无效 NOT VALID' }}</div>
 <div class="sub">{{ '证照真实有效' if verdict.valid else '证照未通过核验' }} ·
  {{ 'This certificate checks out' if verdict.valid else 'This certificate did not pass' }}</div>
 {% for c in checks if not c.ok %}{% if loop.first %}<div class="why">{% endif %}
  <b>✗ {{ c.zh }} · {{ c.en }}</b>{{ c.detail }}
 {% if loop.last %}</div>{% endif %}{% endfor %}
</div>
<section><h2>证照 Certificate</h2><dl>
 <dt>证照标识 Identifier</dt><dd>{{ verdict.certificate.id }}</dd>
 <dt>签发机构 Issuer</dt><dd>{{ verdict.certificate.issuer }}</dd>
 <dt>状态 Status</dt><dd>{{ status_label }}</dd>
 {% if verdict.anchored_at is not none %}<dt>上链区块 Anchored at block</dt>
 <dd>{{ verdict.anchored_at }}</dd>{% endif %}
</dl></section>
{% if fields %}<section><h2>出示的信息 Disclosed fields</h2><dl>
{% for label, value in fields %}<dt>{{ label }}</dt><dd>{{ value }}</dd>{% endfor %}
</dl></section>{% endif %}
<section><h2>核验项目 Checks</h2><ul>
{% for c in checks %}<li class="{{ 'pass' if c.ok else 'fail' }}">
 <span class="mark">{{ '✓' if c.ok else '✗' }}</span>{{ c.zh }} · {{ c.en }}
 <div class="detail">{{ c.detail }}</div></li>{% endfor %}
</ul></section>
{% else %}
<div class="banner err"><div class="big">无法核验</div>
 <div class="sub">Cannot check this code</div></div>
<section><p>{{ message }}</p></section>
{% endif %}
<footer>certledger · 仅核验所出示信息，不保存个人数据 · Only the shown fields are checked;
 no personal data is stored.</footer>
</main></body></html>
"""


def _value(v: Any) -> str:
    if isinstance(v, dict) and "b64" in v:
        return f"(binary, {len(str(v['b64'])) * 3 // 4} bytes)"
    return str(v)


def render_verdict(verdict: dict[str, Any]) -> str:
    checks = [{"ok": c["ok"], "detail": c["detail"],
               "zh": CHECK_LABELS.get(c["name"], (c["name"], c["name"]))[0],
               "en": CHECK_LABELS.get(c["name"], (c["name"], c["name"]))[1]}
              for c in verdict["checks"]]
    fields = [(FIELD_LABELS.get(n, n), _value(v)) for n, v in verdict["disclosed"].items()]
    status = verdict["certificate"].get("status")
    if status is None:
        absent = any(c["name"] == "anchored" and "absence proven" in c["detail"]
                     for c in verdict["checks"])
        label = "未上链 not on the ledger" if absent else "未知 unknown"
    else:
        label = STATUS_LABELS.get(status, status)
    return render_template_string(
        _PAGE, verdict=verdict, checks=checks, fields=fields,
        title="有效 VALID" if verdict["valid"] else "无效 NOT VALID", status_label=label)


def render_error(message: str) -> str:
    return render_template_string(_PAGE, verdict=None, message=message, title="无法核验")
