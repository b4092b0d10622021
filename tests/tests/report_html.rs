//! The drill report's HTML page opens in headless Chromium and shows the timeline and the parity
//! table: a real screenshot, whose pixels are checked.

use catalyst_dr::drill::report::render;
use serde_json::json;

const BAR: [u8; 3] = [0x3b, 0x6f, 0xd8];
const FAILED_ROW: [u8; 3] = [0xfc, 0xe8, 0xe6];

fn chromium() -> &'static str {
    let path = "/usr/bin/chromium";
    assert!(
        std::path::Path::new(path).exists(),
        "{path} is missing: infra/local/stack.sh install puts it there"
    );
    path
}

fn screenshot(html: &str) -> (u32, u32, Vec<u8>) {
    let dir = std::env::temp_dir().join(format!("catalyst-dr-report-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let page = dir.join("report.html");
    let shot = dir.join("report.png");
    std::fs::write(&page, html).expect("write page");
    let status = std::process::Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
        ])
        .args([
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--window-size=1000,1000",
        ])
        .arg(format!("--user-data-dir={}", dir.join("profile").display()))
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("file://{}", page.display()))
        .stderr(std::process::Stdio::null())
        .status()
        .expect("run chromium");
    assert!(status.success(), "chromium failed");
    let decoder = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(&shot).expect("screenshot"),
    ));
    let mut reader = decoder.read_info().expect("png");
    let mut pixels = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut pixels).expect("frame");
    pixels.truncate(info.buffer_size());
    let _ = std::fs::remove_dir_all(&dir);
    let rgb = match info.color_type {
        png::ColorType::Rgba => pixels.chunks(4).flat_map(|p| p[..3].to_vec()).collect(),
        png::ColorType::Rgb => pixels,
        other => panic!("unexpected colour type {other:?}"),
    };
    (info.width, info.height, rgb)
}

fn count(rgb: &[u8], colour: [u8; 3]) -> usize {
    rgb.chunks(3)
        .filter(|p| p.iter().zip(colour).all(|(a, b)| a.abs_diff(b) <= 3))
        .count()
}

fn state(with_failure: bool) -> serde_json::Value {
    json!({
        "started": {"at": "2026-11-26T03:00:00Z"},
        "baseline": {"captured_at": "2026-11-26T03:00:02Z"},
        "start": {"started_at": "2026-11-26T03:00:03Z", "restore_time": "2026-11-26T03:00:02Z"},
        "status": {"checked_at": "2026-11-26T03:04:03Z"},
        "credentials": {"verified_at": "2026-11-26T03:05:00Z"},
        "smoke": {"completed_at": "2026-11-26T03:05:20Z", "checks": [{"name": "users-and-entitlements", "passed": true, "detail": "20000 users"}]},
        "validation": {
            "passed": !with_failure,
            "completed_at": "2026-11-26T03:06:00Z",
            "rpo": {"seconds": 0.0, "objective_seconds": 300, "passed": true},
            "rto": {"seconds": 320.0, "objective_seconds": 3600, "passed": true},
            "tables": [
                {"table": "users", "baseline_rows": 20000, "restored_rows": 20000, "checksum_matches": true, "written_after_baseline": 0, "passed": true},
                {"table": "webhook_deliveries", "baseline_rows": 100000, "restored_rows": if with_failure { 100042 } else { 100000 },
                 "checksum_matches": !with_failure, "written_after_baseline": if with_failure { 42 } else { 0 }, "passed": !with_failure}
            ]
        },
        "teardown": {"completed_at": "2026-11-26T03:06:30Z"}
    })
}

#[test]
fn the_report_shows_its_timeline_and_flags_a_parity_failure() {
    let passed = render("q4-2026", "quarterly", &state(false), &[]);
    assert!(passed.summary.passed);
    let (width, height, rgb) = screenshot(&passed.html);
    assert_eq!((width, height), (1000, 1000));
    let bars = count(&rgb, BAR);
    // Seven of nine steps were reached, each drawn as a bar in the timeline.
    assert!(bars > 2_000, "timeline bars cover {bars} pixels");
    assert_eq!(
        count(&rgb, FAILED_ROW),
        0,
        "no failed parity row on a passed drill"
    );

    let failed = render("q4-2026", "quarterly", &state(true), &[]);
    assert!(!failed.summary.passed);
    let (_, _, rgb) = screenshot(&failed.html);
    assert!(
        count(&rgb, FAILED_ROW) > 1_000,
        "the failing table's row is highlighted"
    );
    assert!(
        failed
            .markdown
            .contains("| webhook_deliveries | 100000 | 100042 | DIFFERS | 42 | FAIL |"),
        "{}",
        failed.markdown
    );
}
