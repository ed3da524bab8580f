/** @type {AppTypes.Config} */
// segnode's configuration of the OHIF viewer (@ohif/app 3.13.2), installed by
// scripts/install-viewer over the dist's own app-config.js. The viewer is served under
// /viewer/ and reads the node's DICOMweb service on the same origin (/dicom-web), so the
// browser's session cookie goes with every request and no CORS is involved.
//
// Open a study with its segmentation drawn:
//   /viewer/viewer?StudyInstanceUIDs=<study>&initialSeriesInstanceUID=<SEG series>
// (the SEG goes into the first viewport and, with disableConfirmationPrompts, is loaded
// onto its referenced CT series without asking).
window.config = {
  name: 'segnode',
  routerBasename: '/viewer',
  extensions: [],
  modes: [],
  // Global customizations: no onboarding tour over the first viewer page.
  customizationService: { 'ohif.tours': { $set: [] } },
  showStudyList: true,
  // OHIF's "investigational use only" banner: never shown.
  investigationalUseDialog: { option: 'never' },
  // Loads SEG (and RTSTRUCT) objects onto their images without a yes/no prompt.
  disableConfirmationPrompts: true,
  showWarningMessageForCrossOrigin: false,
  showCPUFallbackMessage: false,
  showLoadingIndicator: true,
  strictZSpacingForVolumeViewport: true,
  maxNumberOfWebWorkers: 3,
  maxNumRequests: { interaction: 100, thumbnail: 5, prefetch: 25 },
  showErrorDetails: 'always',
  defaultDataSourceName: 'segnode',
  dataSources: [
    {
      namespace: '@ohif/extension-default.dataSourcesModule.dicomweb',
      sourceName: 'segnode',
      configuration: {
        friendlyName: 'segnode',
        name: 'segnode',
        qidoRoot: '/dicom-web',
        wadoRoot: '/dicom-web',
        wadoUriRoot: '/dicom-web',
        // The server may ignore includefield and filters: OHIF filters QIDO results itself.
        qidoSupportsIncludeField: false,
        supportsFuzzyMatching: false,
        supportsWildcard: false,
        staticWado: true,
        // Images and thumbnails from WADO-RS frames (no /rendered or /thumbnail endpoint needed).
        imageRendering: 'wadors',
        thumbnailRendering: 'wadors',
        enableStudyLazyLoad: true,
        // The SEG is fetched whole (WADO-RS instance, application/dicom) rather than per frame.
        loadMultiframeAsPart10: true,
        singlepart: 'bulkdata,video',
        bulkDataURI: { enabled: true, relativeResolution: 'series' },
        omitQuotationForMultipartRequest: true,
      },
    },
  ],
};
