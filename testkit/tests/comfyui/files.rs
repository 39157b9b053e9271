//! Uploads and views: ComfyUI's naming and path rules.

use serde_json::json;

use crate::common::{fake, small_png, submit, upload};

#[tokio::test]
async fn uploads_and_views_follow_comfyuis_naming_and_path_rules() {
    let comfy = fake().await;
    let image = small_png(40, 30);
    let other = small_png(4, 3);
    let (_, first) = upload(&comfy, "cap_src.png", &image, &[]).await;
    assert_eq!(first["name"], "cap_src.png");
    let (_, same) = upload(&comfy, "cap_src.png", &image, &[]).await;
    assert_eq!(
        same["name"], "cap_src.png",
        "identical bytes reuse the name"
    );
    let (_, renamed) = upload(&comfy, "cap_src.png", &other, &[]).await;
    assert_eq!(renamed["name"], "cap_src (1).png");
    let (_, overwritten) = upload(&comfy, "cap_src.png", &other, &[("overwrite", "true")]).await;
    assert_eq!(overwritten["name"], "cap_src.png");
    let (_, sub) = upload(&comfy, "cap_sub.png", &image, &[("subfolder", "capsub")]).await;
    assert_eq!(
        sub,
        json!({"name": "cap_sub.png", "subfolder": "capsub", "type": "input"})
    );
    let (_, temp) = upload(&comfy, "cap_tmp.png", &image, &[("type", "temp")]).await;
    assert_eq!(temp["type"], "temp");
    let (_, evil) = upload(&comfy, "../evil.png", &image, &[]).await;
    assert_eq!(evil["name"], "..%2Fevil.png");
    let uploads = comfy.uploads();
    assert_eq!(uploads.len(), 7);
    assert_eq!(uploads[4].0, "capsub/cap_sub.png");
    assert_eq!(uploads[2].1, other);

    let view = |query: &str| {
        let url = format!("{}/view?{query}", comfy.url());
        async move { reqwest::get(url).await.unwrap() }
    };
    let response = view("filename=cap_sub.png&subfolder=capsub&type=input").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.bytes().await.unwrap()[..], image[..]);
    assert_eq!(
        view("filename=cap_src.png&type=input")
            .await
            .bytes()
            .await
            .unwrap()[..],
        other[..]
    );
    assert_eq!(
        view("filename=cap_src.png&subfolder=../..&type=input")
            .await
            .status(),
        403
    );
    assert_eq!(view("filename=../secret.png").await.status(), 400);
    assert_eq!(view("filename=/etc/passwd").await.status(), 400);
    assert_eq!(view("filename=missing.png").await.status(), 404);
    assert_eq!(view("filename=x.png&type=bogus").await.status(), 400);
    assert_eq!(
        reqwest::get(format!("{}/view", comfy.url()))
            .await
            .unwrap()
            .status(),
        404
    );

    // LoadImage validates against the uploads.
    let graph = r#"{"1": {"class_type": "LoadImage", "inputs": {"image": "nope.png"}}, "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}}}"#;
    let (status, body) = submit(&comfy, graph, None).await;
    assert_eq!(status, 400);
    assert_eq!(
        body["node_errors"]["1"]["errors"][0],
        json!({"type": "custom_validation_failed", "message": "Custom validation failed for node", "details": "image - Invalid image file: nope.png", "extra_info": {"input_name": "image"}})
    );
    let (status, _) = submit(
        &comfy,
        &graph.replace("nope.png", "capsub/cap_sub.png"),
        None,
    )
    .await;
    assert_eq!(status, 200);
}
