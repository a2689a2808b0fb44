import base64
import xml.etree.ElementTree as ET

from fbt_pipelines.reports.sparkline import markdown_image, svg_lines

NS = "{http://www.w3.org/2000/svg}"


def test_two_series_share_one_axis():
    svg = svg_lines({"raw": [10.0, 20.0, 30.0], "adjusted": [0.0, 10.0, float("nan")]}, width=118, height=56)
    root = ET.fromstring(svg)
    lines = root.findall(f"{NS}polyline")
    assert len(lines) == 2
    # x = 18 + 82 * i / 2 -> 18, 59, 100; y = 38 - 20 * v / 30 -> 10: 31.3, 20: 24.7, 30: 18.0
    assert lines[0].get("points") == "18.0,31.3 59.0,24.7 100.0,18.0"
    assert lines[1].get("points") == "18.0,38.0 59.0,31.3"  # the NaN point is left out
    texts = [t.text for t in root.findall(f"{NS}text")]
    assert texts[:2] == ["raw", "adjusted"] and texts[-2:] == ["30.00", "0.00"]


def test_markdown_image_is_a_data_uri_of_the_svg():
    svg = svg_lines({"x": [1.0, 2.0]})
    md = markdown_image(svg, "chart")
    assert md.startswith("![chart](data:image/svg+xml;base64,")
    assert base64.b64decode(md.split(",", 1)[1].rstrip(")")).decode() == svg


def test_bars_put_negatives_left_of_zero_in_red():
    from fbt_pipelines.reports.sparkline import svg_bars

    root = ET.fromstring(svg_bars({"a": 1.0, "b": -0.5}, width=280))
    rects = root.findall(f"{NS}rect")[1:]  # [0] is the background
    # plot from x = 140 to 270 (label 130 + pad 10), span 1.5 -> zero at 140 + 130 * 0.5 / 1.5 = 183.3
    assert [r.get("fill") for r in rects] == ["#27ae60", "#c0392b"]
    assert float(rects[0].get("x")) == 183.3 and float(rects[1].get("x")) + float(rects[1].get("width")) == 183.3
